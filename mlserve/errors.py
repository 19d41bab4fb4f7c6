"""The one error tree of mlserve.

Every error a user can cause or meet is an ``MlserveError``: it says what is wrong, where
(a file:line:column or a field path when known) and how to fix it, and carries the process exit
code. The CLI catches ``MlserveError`` in exactly one place and prints it as one readable message;
tracebacks are shown only with ``--debug``. Adapters translate SDK exceptions into these classes
at their edge, so the core never sees a boto3, Google, Azure, paramiko or docker type.

Exit codes (documented in README.md):

====  =====================================================
0     success
1     a deploy or provider operation failed (previous release keeps serving)
2     invalid input: manifest, arguments, usage
3     a missing dependency (pip extra, system tool) or missing credentials
130   interrupted (Ctrl-C): what was started for a new release is stopped
====  =====================================================
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_INVALID = 2
EXIT_MISSING = 3
EXIT_INTERRUPTED = 130


class MlserveError(Exception):
    """Base of every error shown to a user.

    ``message`` says what is wrong; ``where`` locates it (``mlserve.yaml:4:3`` or ``targets.local.port``);
    ``fix`` says what to do about it; ``details`` is extra text shown below (e.g. a log tail).
    """

    exit_code = EXIT_FAILURE

    def __init__(self, message: str, *, where: str | None = None, fix: str | None = None,
                 details: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.where = where
        self.fix = fix
        self.details = details

    def render(self) -> str:
        """The whole message as plain text (no colour): one line, then fix and details."""
        head = f"{self.where}: {self.message}" if self.where else self.message
        parts = [head]
        if self.fix:
            parts.append(f"fix: {self.fix}")
        if self.details:
            parts.append(self.details.rstrip())
        return "\n".join(parts)

    def to_dict(self) -> dict:
        return {"error": type(self).__name__, "message": self.message, "where": self.where,
                "fix": self.fix, "exit_code": self.exit_code}

    def __str__(self) -> str:
        return self.render()


class InvalidInput(MlserveError):
    """Arguments or usage that cannot work (exit 2)."""

    exit_code = EXIT_INVALID


class ManifestError(InvalidInput):
    """An invalid ``mlserve.yaml``; may carry several problems, each already located."""

    def __init__(self, message: str, *, problems: list[str] | None = None, **kw) -> None:
        super().__init__(message, **kw)
        self.problems = problems or []

    def to_dict(self) -> dict:
        return {**super().to_dict(), "problems": list(self.problems)}

    def render(self) -> str:
        text = super().render()
        if self.problems:
            text += "\n" + "\n".join(f"  - {p}" for p in self.problems)
        return text


class MissingDependency(MlserveError):
    """A pip extra, system tool or interpreter is not installed (exit 3)."""

    exit_code = EXIT_MISSING


class MissingCredentials(MlserveError):
    """Credentials a provider needs are absent (exit 3)."""

    exit_code = EXIT_MISSING


class DeployError(MlserveError):
    """A deploy did not complete; the previous release (if any) is still serving (exit 1)."""


class ProviderError(MlserveError):
    """A provider refused or failed an operation (exit 1)."""


class NotFound(MlserveError):
    """A target, deployment or release that does not exist (exit 2: the input names nothing)."""

    exit_code = EXIT_INVALID


class Busy(MlserveError):
    """Another mlserve process holds the target (exit 1)."""


def missing_extra(extra: str, module: str) -> MissingDependency:
    """The error for an adapter whose optional SDK is not installed."""
    return MissingDependency(
        f"the {extra!r} provider needs the Python package {module!r}, which is not installed",
        fix=f"pip install 'mlserve[{extra}]'",
    )
