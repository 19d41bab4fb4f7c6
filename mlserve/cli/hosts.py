"""Per-host results of fleet providers (``ssh``) as a Rich table (stdout for ``status``, stderr
beside deploy progress).

Input is what the adapter puts in ``DeployResult.extra["hosts"]`` (deploy, rollback),
``status()["extra"]["hosts"]`` and ``RolloutError.hosts``: a list of dicts with at least
``host``, ``status``, ``release`` and ``reason``. ``--json`` prints those lists unchanged.
"""

from __future__ import annotations

from typing import Any

from .output import console, out, plain

_COLOURS = {"deployed": "green", "unchanged": "green", "READY": "green", "failed": "red",
            "FAILED": "red", "UNREACHABLE": "red", "not switched": "yellow", "skipped": "dim",
            "PENDING": "yellow"}


def hosts_table(hosts: list[dict[str, Any]], title: str = "hosts", *, to_stdout: bool = False) -> None:
    """Print one row per host: host, status (coloured), release, reason."""
    from rich.table import Table
    table = Table(title=title, title_justify="left")
    for column in ("host", "status", "release", "reason"):
        table.add_column(column, overflow="fold")
    for row in hosts:
        status = str(row.get("status") or "")
        colour = _COLOURS.get(status, "white")
        table.add_row(plain(row.get("host", "")), f"[{colour}]{plain(status)}[/{colour}]",
                      plain(row.get("release") or "-"), plain(row.get("reason") or ""))
    (out() if to_stdout else console()).print(table)
