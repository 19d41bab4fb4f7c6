"""``mlserve journal export|import``: a journal as one JSON document, to move it between
backends (SQLite directory <-> s3://) or keep a copy.

The document is ``{"format": "mlserve-journal", "schema": N, "tables": {"deployments": [...],
"releases": [...], "events": [...]}}``: every row as it is stored (JSON columns as their text),
sequence numbers kept, so rollback and migrate read the same history after the move. Importing
replaces every row of the destination in one write (one transaction; one log object on S3), and
is refused when the destination holds anything unless ``force``.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from ..errors import InvalidInput
from ..journal_file import COLUMNS, SCHEMA_VERSION
from . import Location, open_state, ops

__all__ = ["export_journal", "import_journal", "load_tables", "FORMAT"]

FORMAT = "mlserve-journal"
TABLES = ("deployments", "releases", "events")
#: columns a row may carry (those of every schema version, and the ones later versions added)
ALLOWED = {**COLUMNS, "deployments": COLUMNS["deployments"] | {"deleted_seq"},
           "releases": COLUMNS["releases"] | {"files", "requirements"}}


def _rows(state, table: str) -> list[dict]:
    if state._db is None:
        return []
    order = "target" if table == "deployments" else "seq"
    return [dict(row) for row in state._db.execute(f"SELECT * FROM {table} ORDER BY {order}")]


def export_journal(location: Location) -> dict:
    """The journal at ``location`` as one document (read-only: nothing is created)."""
    state = open_state(location, read_only=True)
    try:
        return {"format": FORMAT, "schema": SCHEMA_VERSION, "source": str(location),
                "tables": {t: _rows(state, t) for t in TABLES}}
    finally:
        state.close()


def _check_document(doc: Any, where: str) -> dict:
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or \
            not isinstance(doc.get("tables"), dict):
        raise InvalidInput(f"{where} is not an exported mlserve journal",
                           fix="give a file written by `mlserve journal export`")
    schema = doc.get("schema")
    if not isinstance(schema, int) or isinstance(schema, bool) or schema > SCHEMA_VERSION:
        raise InvalidInput(f"{where} holds a journal of schema {schema!r:.20}; this mlserve reads "
                           f"up to {SCHEMA_VERSION}",
                           fix="upgrade mlserve (pip install -U mlserve) and import again")
    return doc["tables"]


def import_journal(document: Any, location: Location, *, force: bool = False,
                   where: str = "the input") -> dict:
    """Write ``document``'s rows into the journal at ``location``; returns row counts."""
    tables = _check_document(document, where)
    probe = sqlite3.connect(":memory:")            # refuse a bad document before writing
    try:
        from ..journal_file import SCHEMA
        probe.executescript(SCHEMA)
        load_tables(probe, tables, where)
    finally:
        probe.close()
    state = open_state(location)
    try:
        if not force and any(_rows(state, t) for t in TABLES):
            raise InvalidInput(f"the journal {location} is not empty",
                               fix="import into an empty journal, or pass --force to replace "
                                   "everything it holds")
        state._write(ops.op("import", tables=tables))
        warnings = list(state.warnings)
    finally:
        state.close()
    return {"destination": str(location), "warnings": warnings,
            **{t: len(tables.get(t) or []) for t in TABLES}}


def load_tables(db: sqlite3.Connection, tables: dict, where: str = "an imported journal") -> None:
    """Replace every row of ``db`` with ``tables`` (the caller's transaction)."""
    for table in TABLES:
        db.execute(f"DELETE FROM {table}")
    for table in TABLES:
        rows = tables.get(table) or []
        if not isinstance(rows, list):
            raise InvalidInput(f"{where}: {table} is not a list of rows",
                               fix="give a file written by `mlserve journal export`")
        for number, row in enumerate(rows, 1):
            if not isinstance(row, dict) or not set(row) <= ALLOWED[table] or any(
                    isinstance(v, (dict, list)) for v in row.values()):
                raise InvalidInput(f"{where}: row {number} of {table} is not a journal row",
                                   fix="give a file written by `mlserve journal export`")
            columns = sorted(row)
            try:
                db.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                           f"({', '.join('?' * len(columns))})", [row[c] for c in columns])
            except (sqlite3.Error, OverflowError) as exc:
                raise InvalidInput(f"{where}: row {number} of {table} cannot be stored ({exc})",
                                   fix="give a file written by `mlserve journal export`") from None


def read_document(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"{where} is not JSON ({exc})",
                           fix="give a file written by `mlserve journal export`") from None
