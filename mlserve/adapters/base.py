"""The provider protocol: what every adapter implements, and the context it is handed.

An adapter is one class per provider that deploys, imported lazily by ``mlserve.adapters.get``
only when a command needs that provider, so heavy SDKs never load for `--help`.

Contract (``Adapter``):
- ``check(ctx)``: dependencies and credentials present, else ``MissingDependency`` /
  ``MissingCredentials`` naming the extra to install or the variable to set.
- ``package(ctx) -> Bundle``: the artifact this provider deploys (files today).
- ``observe(ctx) -> Observed``: READ-ONLY. What the provider has now for this deployment, found
  by its identity (``ctx.identity``: argv paths, a host's store, tags), never by journal rows.
- ``steps(ctx, release, observed) -> list[Step]``: the units of a deploy or rollback, run by
  ``mlserve.adapters.phases.run`` (prepare everywhere, activate in waves, finish, abort).
- ``outcome(ctx, steps, results) -> dict``: provider data for the journal and the result.
- ``caller(ctx, observed) -> Call``: payload -> (HTTP status, body); predict, smoke, migrate.
  A caller may keep connections for its next call and then has ``close()``; callers call it.
- ``logs(ctx, observed, follow, lines)``; ``delete(ctx, observed)``: removes everything
  ``observe`` found, so a lost journal leaks nothing.

The journal belongs to ``mlserve.service``: adapters never open it. They read what the service
gives them (``ctx.current``, ``ctx.history``) and call ``ctx.record(kind, id, **data)`` before a
long wait, so that a killed command's resources can be found, re-attached or cleaned up
(from the command's own thread: the journal's SQLite connection is not shared with the threads
``phases.run`` uses for several steps; ssh needs no record, each host's store is found by the
deployment identity).
Provider states are mapped to ``DeployState`` at the adapter's edge; provider-only fields go in
``extra``; SDK exceptions become ``mlserve.errors`` there too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Protocol

from ..checks import Call  # noqa: F401 - payload -> (HTTP status, body), part of the protocol
from ..vocab import DeployState

if TYPE_CHECKING:
    from ..bundle import Bundle
    from ..manifest import Manifest, Project
    from ..report import Reporter
    from ..state import Release
    from ..targets import TargetBase

#: ``record(kind, id, **data)``: the service journals a resource before a long wait.
Record = Callable[..., None]


@dataclass
class Resource:
    """One thing mlserve made at the provider for this deployment."""

    kind: str                      # "process", "host-release", later "endpoint", "container"...
    id: str                        # provider id: "pid@start", "host:release", an ARN...
    release: str | None
    state: DeployState
    serving: bool                  # takes traffic now
    detail: str = ""


@dataclass
class Observed:
    """What the provider has now (``Adapter.observe``), with one overall state."""

    state: DeployState             # NOT_DEPLOYED when nothing was found
    release: str | None = None     # the release that answers (from /health), or None
    url: str | None = None
    resources: list[Resource] = field(default_factory=list)
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)   # provider-only (the ssh hosts table)

    @property
    def found(self) -> bool:
        """Something of this deployment exists at the provider (``delete`` has work)."""
        return bool(self.resources) or self.state not in (DeployState.NOT_DEPLOYED,
                                                          DeployState.UNREACHABLE)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ReleaseSpec:
    """What to serve: built by the service from the project (deploy) or the journal (rollback)."""

    release_id: str
    snapshot: dict                 # the manifest as it was (``model_dump(mode="json")``)
    bundle: "Bundle | None" = None  # files to ship; None for a rollback (already there)


class Step(Protocol):
    """One unit of a deploy: one host, one endpoint, the one local process."""

    label: str
    previous: str | None           # the release serving there before

    def prepare(self) -> bool: ...  # create beside the old, wait, smoke; False = already serving
    def activate(self) -> None: ...  # switch / shift traffic
    def finish(self) -> None: ...    # drain and remove the old
    def abort(self) -> None: ...     # remove the unused new (another step failed)
    # optional: close() -> None, called by ``phases.run`` when the run ends, whatever happened


def _no_record(kind: str, id: str, **data: Any) -> None:
    """The record callback of read paths: they create nothing to record."""


@dataclass
class Context:
    """Everything an adapter needs for one target; built by ``mlserve.service``. No journal:
    ``current``/``history`` are what the service read from it, ``record`` writes through it."""

    project: "Project"
    target_name: str
    target: "TargetBase"
    reporter: "Reporter"
    state_dir: Path
    secrets: dict[str, str] = field(default_factory=dict, repr=False)
    current: "Release | None" = None
    history: "list[Release]" = field(default_factory=list)
    record: Record = _no_record

    @property
    def manifest(self) -> "Manifest":
        return self.project.manifest

    @property
    def identity(self) -> str:
        """The deployment identity put on everything created (an SSH host's store directory,
        later tags and labels): ``name.target``. The local target scopes it further by the
        state directory, which every process of the deployment carries in its argv
        (``target_dir``): two checkouts of one project on one machine are two deployments."""
        return f"{self.manifest.name}.{self.target_name}"

    @property
    def target_dir(self) -> Path:
        """This target's private directory under the state directory (not created here: read
        paths write nothing; write paths create what they write)."""
        return self.state_dir / self.target.provider / self.target_name


class Adapter:
    """Base class of adapters; subclasses implement what their provider can do."""

    name: str = ""

    def check(self, ctx: Context) -> None:
        """Raise MissingDependency / MissingCredentials when the provider cannot be used."""

    def package(self, ctx: Context) -> "Bundle":
        from ..bundle import collect, state_ignores
        return collect(ctx.project.root, extra_ignores=state_ignores(ctx.project.root, ctx.state_dir))

    def observe(self, ctx: Context) -> Observed:
        raise NotImplementedError

    def steps(self, ctx: Context, release: ReleaseSpec, observed: Observed) -> "list[Step]":
        raise NotImplementedError

    def outcome(self, ctx: Context, steps: "list[Step]", results: list) -> dict[str, Any]:
        """Provider data for the journal and the command's result, after the steps ran
        (whatever their results): by default each step's result when there are several."""
        return {"hosts": [r.to_dict() for r in results]} if len(results) > 1 else {}

    def caller(self, ctx: Context, observed: Observed) -> Call:
        raise NotImplementedError

    def logs(self, ctx: Context, observed: Observed, *, follow: bool, lines: int) -> Iterator[str]:
        raise NotImplementedError

    def delete(self, ctx: Context, observed: Observed) -> None:
        raise NotImplementedError
