"""What the deployer asks of an SSH host: one operation per SSH exec (runs on the host).

Each operation takes the decoded JSON request (and stdin, for uploads) and returns a JSON-able
dict; a ``HostError`` becomes ``{"ok": false, "reason": ..., "log": ...}`` in ``main``. Health,
smoke, process and log handling reuse mlserve's own modules (``mlserve.checks``,
``mlserve.adapters.procs``), shipped inside the helper archive.
"""

from __future__ import annotations

import os
import select
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

from mlserve.adapters.procs import (LOG_TAIL, ProcessRef, build_venv, follow_file, free_port,
                                    http_url, log_tail, port_taken, runtime_args,
                                    runtime_env, stop_process)
from mlserve.reqsets import requirement_lines, venv_key
from mlserve.checks import http_json, load_headline, predict_call, run_smoke, wait_healthy

from .reconcile import observe, processes, reconcile, stop_refs
from .runner import launch, systemd_booted, systemd_mode
from .store import HostError, Store, read_json, write_json

# Runs the runtime from a lib dir: first on sys.path for the host's interpreter (its own
# site-packages may hold an old uvicorn), last in a model venv (the model's requirements win,
# as on the local target).
RUN_RUNTIME = ("import runpy,sys;lib=sys.argv.pop(1);front=sys.argv.pop(1)=='front';"
               "sys.path.insert(0,lib) if front else sys.path.append(lib);"
               "sys.argv[0]='mlserve.runtime';"
               "runpy.run_module('mlserve.runtime',run_name='__main__',alter_sys=True)")


class Deployment:
    """One deployment's releases on this host, for one login (``hostkey``)."""

    def __init__(self, store: Store, request: dict) -> None:
        self.store = store
        self.dir = store.deployments / _name(request["deployment"]) / _name(request["hostkey"])
        self.releases = self.dir / "releases"

    def release(self, release_id: str) -> Path:
        return self.releases / _name(release_id)

    def current(self) -> str | None:
        try:
            return os.readlink(self.dir / "current").rsplit("/", 1)[-1]
        except OSError:
            return None

    def set_current(self, release_id: str) -> None:
        tmp = self.dir / f".current.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        tmp.symlink_to(f"releases/{release_id}")
        os.replace(tmp, self.dir / "current")

    def supervisor(self, release_id: str) -> ProcessRef | None:
        run = read_json(self.release(release_id) / "run.json")
        return ProcessRef(*run["supervisor"]) if run.get("supervisor") else None

    def stop(self, release_id: str, grace: float = 35.0) -> None:
        ref = self.supervisor(release_id)
        if ref is not None:
            stop_process(ref, None, grace)


def _name(text: str) -> str:
    if not text or "/" in text or text.startswith("."):
        raise HostError(f"bad name {text!r}")
    return text


def current_info(dep: Deployment, request: dict) -> dict:
    """``current`` and whether it runs and answers, plus (read-only) which release of this
    deployment really serves on the port and what ``/health`` there names."""
    seen = observe(dep, http_url(request["bind"], request["port"]), request["port"])
    rid = dep.current()
    found = {"answering": seen["answering"], "serving": seen["serving"], "ours": seen["ours"]}
    if rid is None:         # something of ours may serve even so (adopted by the next deploy)
        return {"release": None, "alive": False, "healthy": False,
                **({k: v for k, v in found.items() if v} if seen["serving"] else {})}
    ref = dep.supervisor(rid)
    run = read_json(dep.release(rid) / "run.json")
    return {"release": rid, "alive": bool(ref and ref.alive()),
            "healthy": seen["answering"] == rid,
            "pid": (run.get("runtime") or [None])[0], "mode": run.get("mode"),
            "log": str(dep.release(rid) / "runtime.log"), **found}


def _reconcile(dep: Deployment, request: dict) -> dict:
    return reconcile(dep, http_url(request["bind"], request["port"]), request["port"])


def client_gone() -> bool:
    """The client (``mlserve`` over SSH) has gone: sshd closed the pipe our answers go to.
    A killed deploy must not leave a release it started here loading or running unswitched."""
    poller = select.poll()
    poller.register(sys.stdout.fileno(), select.POLLERR | select.POLLHUP)
    return bool(poller.poll(0))


# -- operations -------------------------------------------------------------------------------

def probe(store: Store, request: dict, stream) -> dict:
    """What the host has: interpreter, systemd, missing objects, and what serves now, after
    reconciling (a deploy's first request: see ``reconcile``)."""
    store.ensure()
    dep = Deployment(store, request)
    reconciled = _reconcile(dep, request)
    return {"reconciled": reconciled, "python": list(sys.version_info[:3]), "uid": os.geteuid(),
            "base": str(store.base),
            "systemd": systemd_mode(), "systemd_booted": systemd_booted(),
            "missing": store.missing(request.get("digests", []), request["hostkey"]),
            "lib_ready": (store.libs / _name(request["lib"])).is_dir(),
            "app_ready": (dep.release(request["release"]) / "app").is_dir(),
            "current": current_info(dep, request)}


def prepare(store: Store, request: dict, stream) -> dict:
    """Receive missing objects, assemble the release, start it beside the current one on a
    private check port, and check health and smoke there. Nothing serving is touched."""
    dep = Deployment(store, request)
    rid = request["release"]
    rel = dep.release(rid)
    with store.lock(exclusive=False):
        received = store.receive(request.get("objects", []), stream, request["hostkey"])
        lib = store.libs / _name(request["lib"])
        if request.get("lib_files") is not None:
            store.assemble(lib, request["lib_files"])
        if not lib.is_dir():
            raise HostError(f"the runtime library {lib} is missing on the host")
        rel.mkdir(parents=True, exist_ok=True)
        if request.get("app") is not None:
            store.assemble(rel / "app", request["app"])
        elif not (rel / "app").is_dir():
            raise HostError(f"release {rid} is no longer on this host (pruned)",
                            fix="deploy that code again, or raise keep_releases in the target")
        helper = rel / "helper.pyz"
        if not helper.exists():
            os.link(store.object(request["helper"]), helper)
        python, venv = ensure_venv(store, request["requirements"], rel / "app")
        write_json(rel / "release.json", {**read_json(rel / "release.json"), "release": rid,
                                          "lib": lib.name, "venv": venv})
    _stop_strays(dep, request)
    if client_gone():
        raise HostError("the client went away; nothing was started")
    spec = _spec(dep, request, python, lib)
    run = launch(rel, str(helper), str(store.base), spec, request.get("resources") or {})
    supervisor = ProcessRef(*run["supervisor"])
    url = f"http://127.0.0.1:{spec['check_port']}"
    reason = wait_healthy(url, request["health_timeout"], max_delay=0.1,
                          alive=lambda: supervisor.alive() and not client_gone())
    if client_gone():
        reason = "the client went away while the release loaded"
    if reason is None and request.get("smoke"):
        reason = run_smoke(predict_call(url), [SimpleNamespace(input=c.get("input"),
                                                               expect=c.get("expect"))
                                               for c in request["smoke"]])
    log = rel / "runtime.log"
    if reason is not None:
        stop_process(supervisor, None, 10)
        tail = log_tail(log, LOG_TAIL)
        headline = load_headline(reason, tail)
        raise HostError(f"failed to load: {headline}" if headline else reason, tail)
    return {"received": received, "check_port": spec["check_port"], "dir": str(rel),
            "log": str(log), "pid": run["runtime"][0], "supervisor": run["supervisor"][0],
            "mode": run.get("mode"), "unit": run.get("unit"), "venv": venv}


def _stop_strays(dep: Deployment, request: dict) -> None:
    """Stop what an interrupted deploy left running (``reconcile``), and the current release
    too when it is being replaced by itself because it stopped answering."""
    _reconcile(dep, request)
    current = dep.current()
    if current == request["release"] and (roles := processes(dep).get(current)):
        stop_refs(roles, grace=10)
    live = current and (ref := dep.supervisor(current)) and ref.alive()
    if not live and current != request["release"] and port_taken(request["bind"], request["port"]):
        raise HostError(f"port {request['port']} is used by another program on this host",
                        fix="stop that program, or choose another port in the target")


def _spec(dep: Deployment, request: dict, python: str, lib: Path) -> dict:
    rel = dep.release(request["release"])
    launch_ = request["launch"]
    front = python == sys.executable
    cmd = [python, *(["-s"] if front else []), "-c", RUN_RUNTIME, str(lib),
           "front" if front else "back",
           *runtime_args(app_dir=str(rel / "app"), entrypoint=launch_["entrypoint"],
                         name=launch_["name"], host=request["bind"], port=request["port"],
                         scaling=launch_["scaling"], release=request["release"])]
    env = runtime_env(launch_.get("env") or {}, launch_.get("secrets") or {})
    return {"cmd": cmd, "env": env, "cwd": str(rel / "app"), "check_port": free_port(),
            "log": str(rel / "runtime.log"), "release": request["release"],
            "deployment": request["deployment"], "hostkey": request["hostkey"]}


def ensure_venv(store: Store, requirements, app_dir: Path) -> tuple[str, str | None]:
    """The interpreter for the model: the host's own, or a venv per requirement set (reused)."""
    lines = requirement_lines(app_dir, requirements)
    if not lines:
        return sys.executable, None
    key = venv_key(lines)
    venv = store.venvs / key
    if (venv / ".complete").exists():
        return str(venv / "bin" / "python"), key
    build = store.venvs / f".{key}.tmp-{os.urandom(4).hex()}"   # unique across hosts sharing a disk
    shutil.rmtree(build, ignore_errors=True)
    log = store.venvs / f"{key}.log"
    with open(log, "wb") as fh:
        failed = build_venv(build, requirements, lines, app_dir, fh)
    if failed:
        shutil.rmtree(build, ignore_errors=True)
    if failed == "venv":
        raise HostError(f"{sys.executable} cannot create a venv", log_tail(log),
                        fix="install the venv module on the host (Debian/Ubuntu: "
                            "apt-get install -y python3-venv)")
    if failed:
        raise HostError("installing the model's requirements on the host failed", log_tail(log),
                        fix="check model.requirements and that the host reaches its package index")
    (build / ".complete").write_text("\n".join(lines))
    try:
        build.rename(venv)
    except OSError:                              # another deploy finished the same venv first
        shutil.rmtree(build, ignore_errors=True)
    return str(venv / "bin" / "python"), key


def activate(store: Store, request: dict, stream) -> dict:
    """Send the checked release onto the public port, point ``current`` at it, and tell the
    previous release to drain (SIGTERM); ``finish`` waits for it. Splitting the two lets a
    rolling deploy move to the next host while this one's old release drains."""
    dep = Deployment(store, request)
    rid = request["release"]
    rel = dep.release(rid)
    log = rel / "runtime.log"
    supervisor = dep.supervisor(rid)
    if supervisor is None or not supervisor.alive():
        raise HostError("the new release stopped before taking traffic", log_tail(log, LOG_TAIL))
    offset = log.stat().st_size
    os.kill(supervisor.pid, signal.SIGUSR1)
    deadline = time.monotonic() + 30
    while True:
        with open(log, "rb") as fh:
            fh.seek(offset)
            if b"activated on" in fh.read():
                break
        if not supervisor.alive() or time.monotonic() > deadline:
            stop_process(supervisor, None, 10)
            raise HostError("the new release did not start listening on the public port",
                            log_tail(log, LOG_TAIL))
        time.sleep(0.01)
    previous = dep.current()
    dep.set_current(rid)
    write_json(rel / "release.json", {**read_json(rel / "release.json"), "activated": time.time()})
    old = dep.supervisor(previous) if previous and previous != rid else None
    if old is not None and old.alive():
        os.kill(old.pid, signal.SIGTERM)          # the supervisor passes it on; the runtime drains
    return {"previous": previous, "pid": read_json(rel / "run.json")["runtime"][0]}


def finish(store: Store, request: dict, stream) -> dict:
    """After a switch: wait for the previous release to drain (SIGKILL after ``grace``), then
    prune old releases and collect garbage."""
    dep = Deployment(store, request)
    previous = request.get("previous")
    if previous and previous != dep.current():
        dep.stop(previous, grace=request.get("grace", 35.0))
    _prune(dep, request.get("keep", 5), request["release"])
    return {}


def _prune(dep: Deployment, keep: int, current: str) -> None:
    activated = sorted((read_json(p / "release.json").get("activated") or 0, p.name)
                       for p in dep.releases.iterdir() if p.name != current)
    kept = {name for stamp, name in activated[::-1][:max(keep - 1, 0)] if stamp}
    for path in dep.releases.iterdir():
        if path.name != current and path.name not in kept:
            ref = dep.supervisor(path.name)
            if ref is None or not ref.alive():
                shutil.rmtree(path, ignore_errors=True)
    try:
        with dep.store.lock(exclusive=True, wait=0):
            dep.store.collect_garbage(min_age=3600)
    except HostError:
        pass                                     # busy: the next deploy collects


def stop(store: Store, request: dict, stream) -> dict:
    """Stop a release that was started but never took traffic (a rollout that stopped)."""
    dep = Deployment(store, request)
    if dep.current() != request["release"]:
        dep.stop(request["release"], grace=10)
    return {}


def status(store: Store, request: dict, stream) -> dict:
    """What serves (``current_info``), and whether anything of the deployment is here at all
    (``present``: a release directory, even one a killed first deploy left without ``current``),
    so that ``observe`` and ``delete`` need no journal."""
    dep = Deployment(store, request)
    present = dep.releases.is_dir() and any(dep.releases.iterdir())
    return {"current": current_info(dep, request), "present": present}


def predict(store: Store, request: dict, stream) -> dict:
    url = http_url(request["bind"], request["port"])
    try:
        code, body = http_json("POST", url + "/predict", {"input": request.get("input")},
                               timeout=request.get("timeout", 300))
    except OSError as exc:
        raise HostError(f"{url} did not answer on the host ({exc})") from None
    return {"status": code, "body": body}


def logs(store: Store, request: dict, stream) -> dict:
    """Print the log of the current (or named) release; with ``follow``, until the client goes."""
    dep = Deployment(store, request)
    rid = request.get("release") or dep.current()
    if rid is None:
        raise HostError("nothing is deployed on this host")
    if request.get("follow"):
        threading.Thread(target=_exit_when_client_leaves, daemon=True).start()
    for line in follow_file(dep.release(rid) / "runtime.log", lines=request.get("lines", 100),
                            follow=bool(request.get("follow"))):
        sys.stdout.write(line + "\n")
        sys.stdout.flush()
    return {}


def _exit_when_client_leaves() -> None:
    poller = select.poll()
    poller.register(sys.stdout.fileno(), select.POLLERR | select.POLLHUP)
    while not poller.poll(1000):
        pass
    os._exit(0)


def delete(store: Store, request: dict, stream) -> dict:
    """Stop every release of this deployment here and remove what mlserve put on the host for
    it: its directory, its partial uploads, and store content no other deployment uses."""
    dep = Deployment(store, request)
    if not store.base.is_dir():
        return {"removed": []}
    units = []
    if dep.releases.is_dir():
        units = [read_json(rel / "run.json").get("unit") for rel in dep.releases.iterdir()]
        for roles in processes(dep).values():   # every process of ours, recorded or not
            stop_refs(roles, grace=35.0)
    _stop_units([u for u in units if u])
    with store.lock(exclusive=True):
        shutil.rmtree(dep.dir, ignore_errors=True)
        for parent in (dep.dir.parent, store.deployments):
            try:
                parent.rmdir()
            except OSError:
                break
        for part in store.partial.glob(f"*.{request['hostkey']}"):
            part.unlink(missing_ok=True)
        removed = store.collect_garbage(min_age=0)
    everything = store.remove_if_unused()
    return {"removed": removed, "base_removed": everything}


def _stop_units(units: list[str]) -> None:
    mode = systemd_mode()
    if not units or not mode:
        return
    user = ["--user"] if mode == "user" else []
    subprocess.run(["systemctl", *user, "stop", *units], capture_output=True)
    subprocess.run(["systemctl", *user, "reset-failed", *units], capture_output=True)


OPS = {"probe": probe, "prepare": prepare, "activate": activate, "finish": finish, "stop": stop,
       "status": status, "predict": predict, "logs": logs, "delete": delete}
