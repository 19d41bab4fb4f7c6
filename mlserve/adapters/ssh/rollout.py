"""One release on one host: ``HostDeploy``, a step of ``mlserve.adapters.phases``.

Per host, three SSH execs: ``probe`` (what the host has and serves, after the host reconciled
what a killed command left: see ``host/reconcile.py``), ``prepare`` (upload what
is missing, assemble, start beside the old release on a check port, health + smoke on the
host) and ``activate`` (public port, ``current`` link, old release drained). A host already
serving the release healthily costs one exec and sends no file content.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator

from ...errors import DeployError
from ..base import Context
from ..procs import http_url
from .connection import Connection, Counter, HostSpec, connect, fingerprint
from .remote import Agent, HostFailure
from .sync import Plan, helper_archive

VENV_TIMEOUT = 1800.0


def base_request(ctx: Context, spec: HostSpec) -> dict:
    return {"deployment": ctx.identity, "hostkey": spec.key, "port": ctx.target.port,
            "bind": ctx.target.bind}


def host_url(ctx: Context, spec: HostSpec) -> str:
    """Where a host's release answers from here: the host's own address when it binds every
    address, else the one it binds."""
    bind = ctx.target.bind
    return http_url(spec.host if bind in ("0.0.0.0", "::", "") else bind, ctx.target.port)


@contextlib.contextmanager
def session(ctx: Context, spec: HostSpec, counter: Counter | None = None) -> Iterator[Agent]:
    conn = open_connection(ctx, spec, counter)
    try:
        yield Agent(conn, ctx.target, ctx.target_name, helper_archive())
    finally:
        conn.close()


def open_connection(ctx: Context, spec: HostSpec, counter: Counter | None = None) -> Connection:
    def accepted(host: str, key) -> None:
        ctx.reporter.warn(f"trusting {host} on first use: {key.get_name()} {fingerprint(key)} "
                          f"recorded in {ctx.target.known_hosts}")
    return connect(spec, ctx.target, ctx.target_name, counter, on_accept=accepted)


class HostDeploy:
    def __init__(self, ctx: Context, spec: HostSpec, plan: Plan, release: str,
                 snapshot: dict, new_files: bool, previous: str | None) -> None:
        self.ctx, self.spec, self.plan, self.release = ctx, spec, plan, release
        self.snapshot, self.new_files = snapshot, new_files
        self.label = spec.label
        self.previous = previous                        # as observed, until the host says
        self.counter = Counter()
        self.serving: str | None = None                 # what the host serves, once reconciled
        self.agent: Agent | None = None
        self.info: dict[str, Any] = {"url": host_url(ctx, spec)}

    def request(self, **more) -> dict:
        return {**base_request(self.ctx, self.spec), "release": self.release, **more}

    def prepare(self) -> bool:
        target, say = self.ctx.target, self.ctx.reporter.step
        self.agent = Agent(open_connection(self.ctx, self.spec, self.counter), target,
                           self.ctx.target_name, self.plan.helper)
        probe = self.agent.call("probe", self.request(lib=self.plan.lib_key,
                                                      digests=self.plan.digests()),
                                timeout=target.connect_timeout + 60)
        self._check_python(probe["python"])
        current = probe["current"]
        self.previous = current.get("release")
        self._reconciled(probe.get("reconciled") or {})
        self.info.update(base_dir=probe["base"], supervision=probe["systemd"] or "setsid")
        if probe.get("systemd_booted") and not probe["systemd"] and probe["uid"] != 0:
            user = self.spec.user
            self.ctx.reporter.warn(
                f"{self.label} runs systemd, but {user}'s own systemd does not linger, so the "
                "model runs under mlserve's supervisor instead of a systemd user unit (no "
                f"resource limits); `sudo loginctl enable-linger {user}` on the host makes "
                "the next release a systemd user unit")
        if current.get("release") == self.release and current.get("healthy"):
            say(f"{self.label}: {self.release} is already serving")
            self.info.update(pid=current.get("pid"), log=current.get("log"))
            return False
        missing = probe["missing"]
        size = sum(self.plan.blobs[d].size - off for d, off in missing)
        say(f"{self.label}: sending {len(missing)} file(s), {_size(size)}; starting "
            f"{self.release} beside {self.previous or 'nothing'}")
        try:
            result = self._prepare(probe, missing)
        except HostFailure as exc:
            exc.message = f"{self.label}: release {self.release} was not started: {exc.reason}"
            raise
        self.info.update({k: result.get(k) for k in ("pid", "check_port", "dir", "log", "unit")})
        return True

    def _reconciled(self, found: dict) -> None:
        """Say what the host's reconciliation (``host/reconcile.py``) adopted and stopped."""
        self.serving = found.get("serving")
        if found.get("adopted"):
            self.ctx.reporter.warn(f"{self.label}: {found['adopted']} answers on the port but "
                                   "the host did not record it as current (an interrupted "
                                   "command): adopted it")
        if found.get("stopped"):
            self.ctx.reporter.step(f"{self.label}: stopped {', '.join(found['stopped'])}, left "
                                   "running by an interrupted command")
        reconciled = {k: found[k] for k in ("adopted", "stopped") if found.get(k)}
        if reconciled:
            self.info["reconciled"] = reconciled

    def _prepare(self, probe: dict, missing: list) -> dict:
        target = self.ctx.target
        model = self.snapshot["model"]
        return self.agent.call("prepare", self.request(
            objects=[{"digest": d, "size": self.plan.blobs[d].size, "offset": off}
                     for d, off in missing],
            lib=self.plan.lib_key, helper=self.plan.helper.digest,
            lib_files=None if probe["lib_ready"] else self.plan.lib_files,
            app=self.plan.app if self.new_files and not probe["app_ready"] else None,
            requirements=model.get("requirements") or [],
            launch={"entrypoint": model["entrypoint"], "name": self.snapshot["name"],
                    "scaling": self.snapshot["scaling"],
                    "env": self.snapshot.get("env") or {}, "secrets": self.ctx.secrets},
            smoke=self.snapshot.get("smoke") or [], health_timeout=target.health_timeout,
            resources=self.snapshot.get("resources") or {}),
            plan=self.plan, missing=missing, timeout=VENV_TIMEOUT + target.health_timeout)

    def _check_python(self, version: list[int]) -> None:
        have, need = tuple(version[:2]), self.plan.min_python
        if have < need:
            raise DeployError(
                f"{self.label}: {self.ctx.target.python} is Python {'.'.join(map(str, version))}; "
                f"the runtime needs Python >= {need[0]}.{need[1]}",
                where=f"targets.{self.ctx.target_name}.python",
                fix="install a newer Python on the host and name it in `python` (e.g. python3.11)")
        wanted = self.snapshot["model"].get("python")
        if wanted and wanted != f"{have[0]}.{have[1]}":
            self.ctx.reporter.warn(f"model.python is {wanted} but {self.label} runs Python "
                                   f"{have[0]}.{have[1]}")

    def activate(self) -> None:
        self.ctx.reporter.step(f"{self.label}: switching to {self.release}")
        result = self.agent.call("activate", self.request(), timeout=120)
        self.info.update(pid=result.get("pid"), previous=result.get("previous"))

    def finish(self) -> None:
        self.agent.call("finish", self.request(previous=self.info.get("previous"),
                                               keep=self.ctx.target.keep_releases), timeout=120)

    def abort(self) -> None:
        if self.agent is not None:
            self.agent.call("stop", self.request(), timeout=60)

    def transfer(self) -> dict:
        return {"files_sent": self.agent.files_sent if self.agent else 0,
                "file_bytes_sent": self.agent.file_bytes if self.agent else 0,
                "wire_bytes_sent": self.counter.sent, "wire_bytes_received": self.counter.received}

    def close(self) -> None:
        if self.agent is not None:
            self.agent.conn.close()


def _size(n: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"
