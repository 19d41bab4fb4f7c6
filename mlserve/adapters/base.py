"""The provider protocol: what every adapter implements, and the context it is handed.

An adapter is one module per provider, imported lazily by ``mlserve.adapters.get`` only when a
command needs that provider, so heavy SDKs never load for `--help` or for other providers.

Contract:
- ``check(ctx)``: dependencies and credentials present, else ``MissingDependency`` /
  ``MissingCredentials`` naming the extra to install or the variable to set.
- ``package(ctx) -> Bundle``: the files this provider deploys (a render for most).
- ``deploy(ctx, bundle, record) -> Outcome``: idempotent; starts the new release beside the old
  one, waits for health, runs the smoke cases (``mlserve.checks``), and only then switches. On any
  failure it raises ``DeployError`` and the previous release keeps serving.
- ``status``, ``logs``, ``predict``, ``delete``, ``rollback`` act on the journal's record.
- ``unsupported``: capability -> the reason a user is shown.
Provider states are normalised here (``PENDING BUILDING READY FAILED DELETED``); provider-only
fields go in ``extra``; SDK exceptions are translated into ``mlserve.errors`` at the adapter edge.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterator

from ..errors import InvalidInput

if TYPE_CHECKING:
    from ..bundle import Bundle
    from ..manifest import Manifest, Project
    from ..report import Reporter
    from ..state import Release, State
    from ..targets import TargetBase

PENDING, BUILDING, READY, FAILED, DELETED = "PENDING", "BUILDING", "READY", "FAILED", "DELETED"
STATES = (PENDING, BUILDING, READY, FAILED, DELETED)


@dataclass
class Context:
    """Everything an adapter needs for one target; built by ``mlserve.service``."""

    project: "Project"
    target_name: str
    target: "TargetBase"
    state: "State"
    reporter: "Reporter"
    secrets: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def manifest(self) -> "Manifest":
        return self.project.manifest

    @property
    def work_dir(self) -> Path:
        """Private per-target directory under the state directory."""
        path = self.state.dir / self.target.provider / self.target_name
        path.mkdir(parents=True, exist_ok=True)
        return path


@dataclass
class Outcome:
    """What a successful deploy produced (recorded in the journal)."""

    url: str | None
    extra: dict[str, Any] = field(default_factory=dict)
    changed: bool = True           # False when the release was already serving (no-op)


@dataclass
class Status:
    state: str                      # one of STATES
    url: str | None = None
    release_id: str | None = None
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class Provider:
    """Base class for adapters; subclasses override what their provider can do."""

    name: ClassVar[str] = ""
    unsupported: ClassVar[dict[str, str]] = {}

    def check(self, ctx: Context) -> None:
        """Raise MissingDependency / MissingCredentials when the provider cannot be used."""

    def package(self, ctx: Context) -> "Bundle":
        raise self._gap("package")

    def deploy(self, ctx: Context, bundle: "Bundle", seq: int) -> Outcome:
        raise self._gap("deploy")

    def status(self, ctx: Context, release: "Release | None") -> Status:
        raise self._gap("status")

    def logs(self, ctx: Context, release: "Release", *, follow: bool, lines: int) -> Iterator[str]:
        raise self._gap("logs")

    def predict(self, ctx: Context, release: "Release", payload: Any) -> Any:
        raise self._gap("predict")

    def delete(self, ctx: Context, releases: "list[Release]") -> None:
        raise self._gap("delete")

    def rollback(self, ctx: Context, release: "Release", seq: int) -> Outcome:
        raise self._gap("rollback")

    def _gap(self, capability: str) -> InvalidInput:
        reason = self.unsupported.get(capability, "not implemented yet")
        return InvalidInput(f"the {self.name!r} provider cannot {capability}: {reason}",
                            fix="use a provider that supports it (see README, 'Providers')")
