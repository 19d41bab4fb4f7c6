"""The SSH adapter's pieces that need no server: rolling order, host names, the shipped files,
the host-side store (run here on a temp dir, as the host runs it), systemd commands.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import threading
import time
import zipfile

import pytest

from mlserve.adapters import phases
from mlserve.adapters.ssh.connection import HostSpec
from mlserve.adapters.ssh.host.runner import systemd_argv
from mlserve.adapters.ssh.host.store import HostError, Store
from mlserve.adapters.ssh.sync import helper_archive, plan_for, runtime_library
from mlserve.errors import DeployError, ProviderError


# -- rolling order ---------------------------------------------------------------------------

class Host:
    """A worker whose steps succeed or raise as told, recording what ran when."""

    active = {"prepare": 0, "activate": 0}
    peak = {"prepare": 0, "activate": 0}
    lock = threading.Lock()

    def __init__(self, label, log, fail_prepare=False, fail_activate=False, unchanged=False):
        self.label, self.log, self.previous = label, log, "r-old"
        self.fail_prepare, self.fail_activate, self.unchanged = fail_prepare, fail_activate, unchanged

    def _busy(self, phase):
        with Host.lock:
            Host.active[phase] += 1
            Host.peak[phase] = max(Host.peak[phase], Host.active[phase])
        time.sleep(0.05)
        with Host.lock:
            Host.active[phase] -= 1

    def prepare(self):
        self.log.append(("prepare", self.label))
        self._busy("prepare")
        if self.fail_prepare:
            raise DeployError(f"{self.label}: not healthy")
        return not self.unchanged

    def activate(self):
        self.log.append(("activate", self.label))
        self._busy("activate")
        if self.fail_activate:
            raise ProviderError(f"{self.label}: lost")

    def finish(self):
        self.log.append(("finish", self.label))

    def abort(self):
        self.log.append(("abort", self.label))


def _roll(hosts, max_parallel=4, max_unavailable=1):
    Host.peak = {"prepare": 0, "activate": 0}
    results = phases.run(hosts, "r-new", max_parallel, max_unavailable)
    return [(r.host, r.status, r.release) for r in results]


def test_every_host_checked_before_any_switches_then_switched_in_order():
    log = []
    hosts = [Host(f"h{i}", log) for i in range(4)]
    assert _roll(hosts) == [(f"h{i}", "deployed", "r-new") for i in range(4)]
    assert {step for step, _ in log[:4]} == {"prepare"}
    assert log[4:8] == [("activate", f"h{i}") for i in range(4)]
    assert sorted(log[8:]) == [("finish", f"h{i}") for i in range(4)]
    assert Host.peak == {"prepare": 4, "activate": 1}


def test_waves_respect_max_unavailable_and_the_pool_max_parallel():
    log = []
    hosts = [Host(f"h{i}", log) for i in range(6)]
    _roll(hosts, max_parallel=2, max_unavailable=3)
    assert Host.peak == {"prepare": 2, "activate": 2}
    _roll(hosts, max_parallel=8, max_unavailable=3)
    assert Host.peak == {"prepare": 6, "activate": 3}


def test_a_failed_check_stops_the_rollout_before_anything_switches():
    log = []
    hosts = [Host("h0", log), Host("h1", log, fail_prepare=True), Host("h2", log), Host("h3", log)]
    assert _roll(hosts, max_parallel=1) == [
        ("h0", "not switched", "r-old"), ("h1", "failed", "r-old"),
        ("h2", "skipped", "r-old"), ("h3", "skipped", "r-old")]
    assert ("abort", "h0") in log and not any(step == "activate" for step, _ in log)
    assert not any(label in ("h2", "h3") for _, label in log)


def test_a_failed_switch_keeps_earlier_hosts_new_and_later_hosts_old():
    log = []
    hosts = [Host("h0", log), Host("h1", log), Host("h2", log, fail_activate=True), Host("h3", log)]
    results = phases.run(hosts, "r-new", 4, 1)
    assert [(r.host, r.status, r.release) for r in results] == [
        ("h0", "deployed", "r-new"), ("h1", "deployed", "r-new"), ("h2", "failed", "r-old"),
        ("h3", "not switched", "r-old")]
    assert results[2].reason == "lost" and isinstance(results[2].error, ProviderError)  # no label
    assert ("activate", "h3") not in log and ("abort", "h3") in log
    assert phases.first_failure(results) is results[2]
    text = phases.summary(results)
    assert "h2  failed" in text and "h3  not switched" in text


def test_unchanged_hosts_are_not_switched():
    log = []
    hosts = [Host("h0", log, unchanged=True), Host("h1", log)]
    assert _roll(hosts) == [("h0", "unchanged", "r-new"), ("h1", "deployed", "r-new")]
    assert ("activate", "h0") not in log


# -- names -----------------------------------------------------------------------------------

@pytest.mark.parametrize("text,user,host,port,label", [
    ("ubuntu@203.0.113.7", "ubuntu", "203.0.113.7", 22, "ubuntu@203.0.113.7"),
    ("me@gpu-2.example.com:2222", "me", "gpu-2.example.com", 2222, "me@gpu-2.example.com:2222"),
    ("root@[::1]:2200", "root", "::1", 2200, "root@[::1]:2200"),
])
def test_host_spec(text, user, host, port, label):
    spec = HostSpec.parse(text)
    assert (spec.user, spec.host, spec.port, spec.label) == (user, host, port, label)
    assert "/" not in spec.key and ":" not in spec.key


# -- what travels ----------------------------------------------------------------------------

def test_runtime_library_is_pure_python_and_complete():
    files, min_python = runtime_library()
    paths = {p for p, _ in files}
    for needed in ("mlserve/__init__.py", "mlserve/runtime/__main__.py", "mlserve/runtime/server.py",
                   "uvicorn/__init__.py", "h11/__init__.py", "click/__init__.py"):
        assert needed in paths
    assert not [p for p in paths if p.endswith((".so", ".pyc")) or p.startswith("..")]
    assert not [p for p in paths if p.startswith(("paramiko", "pydantic", "mlserve/cli"))]
    assert min_python >= (3, 10)


def test_helper_archive_is_reproducible_and_runs_on_a_plain_python(tmp_path):
    blob = helper_archive()
    assert hashlib.sha256(blob.data).hexdigest() == blob.digest
    names = zipfile.ZipFile(io.BytesIO(blob.data)).namelist()
    assert "__main__.py" in names and "mlserve_host/ops.py" in names
    assert "mlserve/checks.py" in names and not any("paramiko" in n for n in names)
    helper = tmp_path / "helper.pyz"
    helper.write_bytes(blob.data)
    plan = plan_for(None)
    request = {"op": "probe", "deployment": "d.t", "hostkey": "u@h_22", "release": "r-1",
               "lib": plan.lib_key, "digests": plan.digests(), "port": 1, "bind": "127.0.0.1"}
    done = subprocess.run(["/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable,
                           "-I", str(helper), str(tmp_path / "base"), "serve"],
                          input=json.dumps(request) + "\n", capture_output=True, text=True,
                          timeout=60)
    answer = json.loads(done.stdout.splitlines()[-1])
    assert answer["ok"], done.stderr
    assert len(answer["missing"]) == len(set(plan.digests()))
    assert answer["current"] == {"release": None, "alive": False, "healthy": False}


def test_the_launcher_runs_the_helper_without_costly_imports(tmp_path):
    """Every SSH exec pays for the helper's imports on the host's CPU: the launch command and a
    probe must not pull in typing, dataclasses, urllib's opener, runpy/pkgutil or paramiko."""
    from mlserve.adapters.ssh.remote import LAUNCH
    blob = helper_archive()
    objects = tmp_path / "base" / "objects"
    objects.mkdir(parents=True)
    (objects / blob.digest).write_bytes(blob.data)
    plan = plan_for(None)
    request = {"op": "probe", "deployment": "d.t", "hostkey": "u@h_22", "release": "r-1",
               "lib": plan.lib_key, "digests": [], "port": 1, "bind": "127.0.0.1"}
    report = "import sys,json;print(json.dumps(sorted(sys.modules)),file=sys.stderr)"
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else sys.executable
    launch = f"import atexit;atexit.register(lambda:exec({report!r}))\n" + LAUNCH
    done = subprocess.run([python, "-I", "-c", launch, str(tmp_path / "base"), blob.digest, "serve"],
                          input=json.dumps(request) + "\n", capture_output=True, text=True,
                          timeout=60)
    assert json.loads(done.stdout.splitlines()[-1])["ok"], done.stderr
    loaded = set(json.loads(done.stderr.splitlines()[-1]))
    assert "mlserve_host.ops" in loaded and "mlserve.checks" in loaded
    assert not loaded & {"typing", "dataclasses", "inspect", "urllib.request", "runpy", "pkgutil",
                         "paramiko", "pydantic", "mlserve.adapters.base", "mlserve.errors"}


# -- the host-side store ---------------------------------------------------------------------

def test_receive_resumes_a_partial_upload_and_refuses_corruption(tmp_path):
    store = Store(str(tmp_path / "base"))
    store.ensure()
    data = os.urandom(300_000)
    digest = hashlib.sha256(data).hexdigest()
    (store.partial / f"{digest}.me").write_bytes(data[:100_000] + b"garbage-after-the-cut")
    assert store.missing([digest], "me") == [[digest, 100_021]]
    got = store.receive([{"digest": digest, "size": len(data), "offset": 100_000}],
                        io.BytesIO(data[100_000:]), "me")
    assert got == 200_000
    assert store.object(digest).read_bytes() == data and store.missing([digest], "me") == []
    assert oct(store.object(digest).stat().st_mode & 0o777) == "0o444"

    other = os.urandom(1000)
    bad = hashlib.sha256(other).hexdigest()
    with pytest.raises(HostError, match="arrived corrupted"):
        store.receive([{"digest": bad, "size": 1000, "offset": 0}], io.BytesIO(b"x" * 1000), "me")
    with pytest.raises(HostError, match="stopped early"):
        store.receive([{"digest": bad, "size": 1000, "offset": 0}], io.BytesIO(other[:10]), "me")
    assert (store.partial / f"{bad}.me").stat().st_size == 10       # kept for the next run


def test_assemble_links_objects_and_garbage_follows_link_counts(tmp_path):
    store = Store(str(tmp_path / "base"))
    store.ensure()
    blobs = {}
    for name, content in (("a", b"alpha"), ("b", b"beta"), ("orphan", b"nobody")):
        digest = hashlib.sha256(content).hexdigest()
        (store.objects / digest).write_bytes(content)
        blobs[name] = digest
    app = store.deployments / "d" / "k" / "releases" / "r-1" / "app"
    app.parent.mkdir(parents=True)
    store.assemble(app, [["x/a.txt", blobs["a"], False], ["run.sh", blobs["b"], True]])
    assert (app / "x" / "a.txt").stat().st_ino == store.object(blobs["a"]).stat().st_ino
    assert os.access(app / "run.sh", os.X_OK)
    with pytest.raises(HostError, match="unsafe path"):
        store.assemble(app.with_name("evil"), [["../../etc/x", blobs["a"], False]])
    removed = store.collect_garbage(min_age=0)     # b was copied (executable): unlinked too
    assert set(removed) == {f"objects/{blobs['b'][:12]}", f"objects/{blobs['orphan'][:12]}"}
    assert store.object(blobs["a"]).exists()
    assert not store.remove_if_unused()              # a deployment is still there


def test_remove_if_unused_only_removes_a_base_dir_mlserve_created(tmp_path):
    mine = Store(str(tmp_path / "mine"))
    mine.ensure()
    assert mine.remove_if_unused() and not mine.base.exists()
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "keep.txt").write_text("not ours")
    store = Store(str(theirs))
    store.ensure()
    with store.lock(exclusive=True):
        pass
    assert store.remove_if_unused()
    assert sorted(p.name for p in theirs.iterdir()) == ["keep.txt"]   # ours went, theirs stayed


def test_systemd_command_carries_the_resources():
    argv = systemd_argv("user", "mlserve-x.service", {"memory": "512Mi", "cpu": 1.5},
                        ["/usr/bin/python3", "helper", "base", "supervise"])
    assert argv[:2] == ["systemd-run", "--user"]
    assert "--property=MemoryMax=512M" in argv and "--property=CPUQuota=150%" in argv
    assert argv[argv.index("--") + 1:] == ["/usr/bin/python3", "helper", "base", "supervise"]


def test_hosts_table_prints_every_host(capsys):
    from mlserve.cli.hosts import hosts_table
    hosts_table([{"host": "root@10.0.0.2", "status": "deployed", "release": "r-new", "reason": None},
                 {"host": "root@10.0.0.3", "status": "failed", "release": "r-old",
                  "reason": "refused the connection [tag]"}])
    err = capsys.readouterr().err
    assert "root@10.0.0.2" in err and "deployed" in err and "[tag]" in err
