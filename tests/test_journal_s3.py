"""The shared journal on S3 (``--state s3://bucket/prefix``) against moto's S3 server in a
subprocess on loopback (``tests.infra.s3``), through the real CLI and real processes.

moto checks conditional writes but not atomically under concurrency (it loses a race now and
then: ``benchmarks/journal/moto_race.py`` measures how often; a suite assertion on those odds
flaked under load); the tests run against moto serialized to one request at a time
(``s3_store``), which honours them as AWS S3, MinIO and R2 do (the first test checks that). MinIO's server cannot be installed here.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.helpers import MLSERVE, run_process
from tests.infra.s3 import race_rounds
from tests.test_local_deploy import _post, _project

pytestmark = pytest.mark.slow

ISOLATED = {"AWS_CONFIG_FILE": "/nonexistent", "AWS_SHARED_CREDENTIALS_FILE": "/nonexistent",
            "AWS_EC2_METADATA_DISABLED": "true"}


def _env(store, **extra) -> dict:
    return {**ISOLATED, **store.env(), **extra}


@pytest.fixture()
def journal(s3_store, monkeypatch):
    """A fresh bucket; this process's environment points at the store."""
    for key, value in _env(s3_store).items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    bucket = s3_store.bucket()
    return f"s3://{bucket}/team/hello", bucket


@pytest.fixture()
def deployed(tmp_path, journal, s3_store):
    """A local-target project whose journal is on S3; deleted at the end."""
    project, port = _project(tmp_path)
    url, bucket = journal
    args = ["-f", str(project), "--state", url]
    yield project, port, args, bucket
    run_process("delete", *args, "--yes", env=_env(s3_store))


# -- the store itself ------------------------------------------------------------------------
def test_serialized_store_honours_conditional_writes(s3_store):
    import boto3
    rounds, doubled = race_rounds(s3_store, 100)
    assert doubled == 0 and rounds == 100
    client = boto3.client("s3", endpoint_url=s3_store.endpoint, region_name="us-east-1",
                          aws_access_key_id="t", aws_secret_access_key="t")
    bucket = s3_store.bucket()
    first = client.put_object(Bucket=bucket, Key="k", Body=b"1")["ETag"]
    client.put_object(Bucket=bucket, Key="k", Body=b"2", IfMatch=first)     # right ETag: applies
    with pytest.raises(client.exceptions.ClientError, match="PreconditionFailed"):
        client.put_object(Bucket=bucket, Key="k", Body=b"3", IfMatch=first)  # stale ETag
    with pytest.raises(client.exceptions.ClientError, match="PreconditionFailed"):
        client.put_object(Bucket=bucket, Key="k", Body=b"4", IfNoneMatch="*")


# -- deploy, status, rollback through the shared journal -------------------------------------
def test_deploy_status_rollback_through_s3(deployed, s3_store, tmp_path):
    project, port, args, bucket = deployed
    env = _env(s3_store)
    first = run_process("deploy", *args, "--json", env=env)
    assert first.code == 0, first.err
    release1 = json.loads(first.out)["release"]
    manifest = project / "mlserve.yaml"
    manifest.write_text(manifest.read_text().replace('FACTOR: "2"', 'FACTOR: "3"')
                        .replace("expect: {y: [2, 4, 6]}", "expect: {y: [3, 6, 9]}"))
    second = run_process("deploy", *args, "--json", env=env)
    assert second.code == 0, second.err
    release2 = json.loads(second.out)["release"]
    assert release2 != release1

    status = run_process("status", *args, "--json", env=env)
    assert status.code == 0, status.err
    assert json.loads(status.out)["status"] == "READY"
    planned = run_process("plan", *args, "--json", env=env)     # plan reads the shared journal
    assert planned.code == 0, planned.err
    assert (json.loads(planned.out)["action"], json.loads(planned.out)["current"]) == ("none", release2)
    # another "machine": a copy of the project elsewhere, no local state, same journal: it sees
    # the history (the local provider's process is this machine's, so it is not live there)
    laptop = tmp_path / "laptop"
    import shutil
    shutil.copytree(project, laptop, ignore=shutil.ignore_patterns(".mlserve"))
    status = run_process("status", "-f", str(laptop), "--state", args[-1], "--json", env=env)
    assert status.code == 0, status.err
    info = json.loads(status.out)
    assert info["release"] == release2
    assert [r["release"] for r in info["releases"]][:2] == [release2, release1]   # newest first

    back = run_process("rollback", *args, "--json", env=env)
    assert back.code == 0, back.err
    assert json.loads(back.out)["release"] == release1
    assert _post(f"http://127.0.0.1:{port}", {"x": [1]})[1] == {"output": {"y": [2]}}

    # the journal is in the bucket, not beside the manifest
    keys = s3_store.keys(bucket)
    assert any(k.startswith("team/hello/journal/log/") for k in keys)
    assert not (project / ".mlserve" / "state.db").exists()
    locks = [k for k in keys if "/locks/" in k and not k.endswith("/.clock")]
    assert all(json.loads(s3_store.client().get_object(Bucket=bucket, Key=k)["Body"].read())
               == {"released": True} for k in locks), "a lock was left held"


def test_manifest_state_and_mlserve_state_choose_the_journal(tmp_path, journal, s3_store,
                                                             monkeypatch, capsys):
    from tests.helpers import run_cli
    url, bucket = journal
    project, _ = _project(tmp_path)
    manifest = project / "mlserve.yaml"
    manifest.write_text(manifest.read_text() + f"state: {url}\n")
    assert run_cli(capsys, "validate", "-f", str(project)).code == 0
    from mlserve.journal import locate
    from mlserve.manifest import load_project
    loaded = load_project(project)
    assert locate(project, loaded.manifest.state, None).url == url
    monkeypatch.setenv("MLSERVE_STATE", str(tmp_path / "elsewhere"))
    where = locate(project, loaded.manifest.state, None)
    assert where.url is None and where.local_dir == tmp_path / "elsewhere"
    assert locate(project, loaded.manifest.state, "s3://other-bucket/x").url == "s3://other-bucket/x"


@pytest.mark.parametrize("value, fragment", [
    ("s3://A_B/x", "is not s3://BUCKET/PREFIX"),
    ("s3://ab", "is not s3://BUCKET/PREFIX"),
    ("s3://bucket/a b", "is not s3://BUCKET/PREFIX"),
    ("gs://bucket/x", "names a store mlserve cannot use"),
    ("s3://bucket/x\x1b[31m", "is not s3://BUCKET/PREFIX"),
])
def test_bad_journal_urls_exit_2(tmp_path, capsys, value, fragment):
    from tests.helpers import run_cli
    project, _ = _project(tmp_path)
    result = run_cli(capsys, "status", "-f", str(project), "--state", value)
    assert result.code == 2, result.err
    assert fragment in result.err and "Traceback" not in result.err and "\x1b[31m" not in result.err


def test_bad_manifest_state_is_a_manifest_error(tmp_path, capsys):
    from tests.helpers import run_cli
    project, _ = _project(tmp_path)
    manifest = project / "mlserve.yaml"
    manifest.write_text(manifest.read_text() + "state: 'gs://bucket/x'\n")
    result = run_cli(capsys, "validate", "-f", str(project))
    assert result.code == 2 and "state" in result.err and "Traceback" not in result.err


# -- locks -----------------------------------------------------------------------------------
def _slow_project(tmp_path: Path, seconds: int):
    project, port = _project(tmp_path)
    model = project / "model.py"
    model.write_text(model.read_text().replace(
        "def load(self) -> None:", f"def load(self) -> None:\n        import time; time.sleep({seconds})"))
    return project, port


def _wait_for_lock(store, bucket: str, target: str = "local", timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if f"team/hello/locks/{target}.json" in store.keys(bucket, "team/hello/locks/"):
            body = store.client().get_object(Bucket=bucket, Key=f"team/hello/locks/{target}.json")
            return json.loads(body["Body"].read())
        time.sleep(0.05)
    raise AssertionError("the deploy never took the lock")


def test_two_concurrent_deploys_of_one_target(tmp_path, journal, s3_store):
    """Two processes deploy one target: the second exits 1 naming the holder (pid, host, CI job
    URL); with --lock-timeout it waits for the first and then finds the release serving."""
    url, bucket = journal
    project, _ = _slow_project(tmp_path, 4)
    args = ["-f", str(project), "--state", url]
    env = {**os.environ, **_env(s3_store), "COLUMNS": "200", "GITHUB_SERVER_URL": "https://gh.test",
           "GITHUB_REPOSITORY": "team/model", "GITHUB_RUN_ID": "42"}
    first = subprocess.Popen([sys.executable, "-m", "mlserve.cli", "deploy", *args],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        holder = _wait_for_lock(s3_store, bucket)
        assert holder["pid"] == first.pid and holder["job"] == "https://gh.test/team/model/actions/runs/42"
        refused = run_process("deploy", *args, env=_env(s3_store))
        assert refused.code == 1, refused.err
        assert f"target 'local' is busy: deploy by pid {first.pid} on" in refused.err
        assert "https://gh.test/team/model/actions/runs/42" in refused.err
        assert "Traceback" not in refused.err
        waited = run_process("deploy", *args, "--lock-timeout", "120", "--json",
                             env=_env(s3_store))
        assert waited.code == 0, waited.err
        assert json.loads(waited.out)["changed"] is False      # the first one deployed it
    finally:
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert run_process("delete", *args, "--yes", env=_env(s3_store)).code == 0


def test_holder_killed_mid_deploy_loses_the_lease(tmp_path, journal, s3_store):
    url, bucket = journal
    project, port = _slow_project(tmp_path, 30)
    args = ["-f", str(project), "--state", url]
    env = {**os.environ, **_env(s3_store), "MLSERVE_LOCK_LEASE": "3"}
    holder = subprocess.Popen([sys.executable, "-m", "mlserve.cli", "deploy", *args],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                              start_new_session=True)
    try:
        _wait_for_lock(s3_store, bucket)
        time.sleep(4)            # past one lease: the living holder renewed it
        assert run_process("deploy", *args, env=_env(s3_store, MLSERVE_LOCK_LEASE="3")).code == 1
        os.killpg(holder.pid, signal.SIGKILL)     # mlserve and the runtime it started
    finally:
        holder.kill()
        holder.wait()
    model = project / "model.py"
    model.write_text(model.read_text().replace("import time; time.sleep(30)", "pass"))
    started = time.monotonic()
    after = run_process("deploy", *args, "--lock-timeout", "30", "--json",
                        env=_env(s3_store, MLSERVE_LOCK_LEASE="3"))
    assert after.code == 0, after.err
    assert time.monotonic() - started < 30
    assert _post(f"http://127.0.0.1:{port}", {"x": [1]})[1] == {"output": {"y": [2]}}
    status = json.loads(run_process("status", *args, "--json", env=_env(s3_store)).out)
    outcomes = [r["outcome"] for r in status["releases"]]
    assert outcomes[0] == "serving" and "failed" in outcomes   # newest first; the killed one settled
    assert run_process("delete", *args, "--yes", env=_env(s3_store)).code == 0


def test_locks_of_different_targets_do_not_block(journal):
    from mlserve.errors import Busy
    from mlserve.journal.s3 import S3State
    url, _ = journal
    one, two = S3State(url), S3State(url)
    try:
        with one.lock("a"):
            started = time.monotonic()
            with two.lock("b"):
                assert time.monotonic() - started < 5
            with pytest.raises(Busy, match=r"target 'a' is busy: deploy by pid \d+ on"):
                with two.lock("a"):
                    pass
        with two.lock("a"):           # released: free again at once
            pass
    finally:
        one.close()
        two.close()


def test_lock_waits_for_a_release_within_the_timeout(journal):
    from mlserve.journal.s3 import S3State
    from tests.test_journal_locate import assert_waits_for_release
    url, _ = journal
    holder, waiter = S3State(url), S3State(url)
    try:
        assert_waits_for_release(holder, waiter, "t")
    finally:
        from mlserve import journal as settings
        settings.set_lock_timeout(None)
        holder.close()
        waiter.close()


# -- no lost update ----------------------------------------------------------------------------
WRITER = """
import sys
from mlserve.journal.s3 import S3State
state = S3State(sys.argv[1])
for i in range(int(sys.argv[3])):
    seq = state.add_release("t" + sys.argv[2][-1], f"r{sys.argv[2]}-{i}", "local", "h", {}, None)
    state.event("shared", "write", f"{sys.argv[2]}-{i}-{seq}")
state.close()
"""


def test_twenty_concurrent_writers_lose_no_record(journal, s3_store):
    from mlserve.journal.s3 import S3State
    url, bucket = journal
    env = {**os.environ, **_env(s3_store)}
    writers, each = 20, 5
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, url, f"w{n:02d}", str(each)], env=env,
                              stderr=subprocess.PIPE, text=True) for n in range(writers)]
    for proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    state = S3State.for_reading(url)
    try:
        messages = [e["message"] for e in state.events("shared", 10_000)]
        releases = [r for t in range(10) for r in state.releases(f"t{t}")]
    finally:
        state.close()
    assert len(messages) == len(set(messages)) == writers * each
    assert {m.rsplit("-", 1)[0] for m in messages} == {f"w{n:02d}-{i}" for n in range(writers)
                                                       for i in range(each)}
    # each writer's sequence number is the one every reader sees for its release
    seq_of = {r.release_id: r.seq for r in releases}
    for message in messages:
        name, seq = message.rsplit("-", 1)
        assert seq_of[f"r{name}"] == int(seq)
    assert len(s3_store.keys(bucket, "team/hello/journal/log/")) == 2 * writers * each


# -- hostile and broken stores -----------------------------------------------------------------
HOSTILE = {
    "not json": b"\x00\xff not json",
    "a list": b"[1, 2]",
    "unknown op": json.dumps({"op": "drop_tables", "at": 1}).encode(),
    "wrong type": json.dumps({"op": "event", "at": 1, "target": 5, "kind": "k",
                              "message": "m"}).encode(),
    "bool seq": json.dumps({"op": "discard_release", "at": 1, "seq": True}).encode(),
    "import of junk": json.dumps({"op": "import", "at": 1, "tables": {"releases": "x"}}).encode(),
    "terminal escapes": json.dumps({"op": "\x1b[31mred", "at": 1}).encode(),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_log_objects_are_skipped_with_a_warning(journal, s3_store, case, tmp_path, capsys):
    from mlserve.journal.s3 import S3State
    url, bucket = journal
    state = S3State(url)
    state.event("local", "first", "before")
    s3_store.client().put_object(Bucket=bucket, Key=f"team/hello/journal/log/{2:020d}.json",
                                 Body=HOSTILE[case])
    state.event("local", "second", "after")           # the writer steps over it
    state.close()
    reader = S3State.for_reading(url)
    try:
        assert [e["kind"] for e in reader.events("local")] == ["first", "second"]
        assert len(reader.warnings) == 1 and "is not a journal write" in reader.warnings[0]
        assert "aws s3 rm" in reader.warnings[0]
    finally:
        reader.close()
    project, _ = _project(tmp_path)
    from tests.helpers import run_cli
    shown = run_cli(capsys, "status", "-f", str(project), "--state", url)
    assert shown.code == 0 and "Traceback" not in shown.err and "\x1b[31m" not in shown.err


def test_foreign_keys_and_a_damaged_checkpoint_are_ignored(journal, s3_store):
    from mlserve.journal import s3 as s3journal
    url, bucket = journal
    client = s3_store.client()
    client.put_object(Bucket=bucket, Key="team/hello/journal/log/readme.txt", Body=b"hi")
    client.put_object(Bucket=bucket, Key="team/hello/journal/checkpoint.db", Body=b"garbage",
                      Metadata={"log-index": "0"})
    state = s3journal.S3State(url)
    for i in range(s3journal.CHECKPOINT_EVERY + 2):
        state.event("t", "n", str(i))
    state.close()
    reader = s3journal.S3State.for_reading(url)     # from the new checkpoint + 2 log objects
    try:
        assert [e["message"] for e in reader.events("t", 1000)] == \
            [str(i) for i in range(s3journal.CHECKPOINT_EVERY + 2)]
        assert reader._index == s3journal.CHECKPOINT_EVERY + 2
    finally:
        reader.close()
    client.put_object(Bucket=bucket, Key="team/hello/journal/checkpoint.db", Body=b"SQLite junk",
                      Metadata={"log-index": "25"})
    damaged = s3journal.S3State.for_reading(url)
    try:
        assert len(damaged.events("t", 1000)) == s3journal.CHECKPOINT_EVERY + 2
        assert any("checkpoint" in w and "replayed from the start" in w for w in damaged.warnings)
        assert any("not mlserve's" in w for w in damaged.warnings)
    finally:
        damaged.close()


def test_unreadable_lock_object_names_no_holder_and_expires(journal, s3_store):
    from mlserve import journal as settings
    from mlserve.errors import Busy
    from mlserve.journal.s3 import S3State
    url, bucket = journal
    s3_store.client().put_object(Bucket=bucket, Key="team/hello/locks/x.json", Body=b"\x00junk")
    state = S3State(url)
    try:
        with pytest.raises(Busy, match="its lock object is unreadable"):
            with state.lock("x"):
                pass
        os.environ["MLSERVE_LOCK_LEASE"] = "1"
        settings.set_lock_timeout(10)
        with state.lock("x"):          # not renewed for a lease: taken over
            pass
    finally:
        os.environ.pop("MLSERVE_LOCK_LEASE", None)
        settings.set_lock_timeout(None)
        state.close()


def test_a_profile_of_the_credentials_file_is_used_when_no_keys_are_exported(tmp_path, s3_store):
    """No keys in the environment: botocore's chain finds them (here AWS_PROFILE in a shared
    credentials file), the S3 client signs with them and the deploy is journaled in the bucket;
    a profile that does not exist is exit 3 naming it."""
    project, _ = _project(tmp_path)
    credentials = tmp_path / "credentials"
    credentials.write_text("[team]\naws_access_key_id = testing\naws_secret_access_key = testing\n")
    env = {**os.environ, **ISOLATED, "AWS_ENDPOINT_URL_S3": s3_store.endpoint,
           "AWS_SHARED_CREDENTIALS_FILE": str(credentials), "AWS_PROFILE": "team",
           "AWS_REGION": "us-east-1"}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        env.pop(key, None)
    bucket = s3_store.bucket()
    args = ["-f", str(project), "--state", f"s3://{bucket}/p"]
    try:
        deployed = subprocess.run([*MLSERVE, "deploy", *args], env=env, capture_output=True,
                                  text=True, timeout=180)
        assert deployed.returncode == 0, deployed.stderr
        assert any(k.startswith("p/journal/log/") for k in s3_store.keys(bucket))
        unknown = subprocess.run([*MLSERVE, "status", *args], env={**env, "AWS_PROFILE": "nope"},
                                 capture_output=True, text=True, timeout=60)
        assert unknown.returncode == 3 and "nope" in unknown.stderr, unknown.stderr
        assert "Traceback" not in unknown.stderr
    finally:
        subprocess.run([*MLSERVE, "delete", *args, "--yes"], env=env, capture_output=True,
                       timeout=180)


def test_missing_credentials_bucket_and_unreachable_store(tmp_path, s3_store, capsys, monkeypatch):
    project, _ = _project(tmp_path)
    base = {**os.environ, **ISOLATED, "AWS_ENDPOINT_URL_S3": s3_store.endpoint}
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_SESSION_TOKEN"):
        base.pop(key, None)
    bucket = s3_store.bucket()
    no_keys = subprocess.run([sys.executable, "-m", "mlserve.cli", "status", "-f", str(project),
                              "--state", f"s3://{bucket}/x"], env=base, capture_output=True,
                             text=True, timeout=60)
    assert no_keys.returncode == 3, no_keys.stderr
    assert "needs AWS credentials" in no_keys.stderr and "AWS_ACCESS_KEY_ID" in no_keys.stderr
    env = _env(s3_store)
    missing = run_process("deploy", "-f", str(project), "--state", "s3://no-such-bucket-here/x",
                          env=env)
    assert missing.code == 3, missing.err
    assert "bucket 'no-such-bucket-here' does not exist" in missing.err
    assert "aws s3 mb s3://no-such-bucket-here" in missing.err and "Traceback" not in missing.err
    from tests.infra.net import free_port
    dead = run_process("status", "-f", str(project), "--state", f"s3://{bucket}/x",
                       env={**env, "AWS_ENDPOINT_URL_S3": f"http://127.0.0.1:{free_port()}",
                            "AWS_MAX_ATTEMPTS": "1"})
    assert dead.code == 1 and "Could not connect" in dead.err and "Traceback" not in dead.err


def test_access_denied_exit_3(tmp_path):
    """moto with IAM enforced (INITIAL_NO_AUTH_ACTION_COUNT=0): unknown keys are refused."""
    from tests.infra.s3 import running_moto
    project, _ = _project(tmp_path)
    with running_moto(serialize=True, env={"INITIAL_NO_AUTH_ACTION_COUNT": "0"}) as store:
        denied = run_process("status", "-f", str(project), "--state", "s3://some-bucket/x",
                             env=_env(store))
    assert denied.code == 3, denied.err
    assert "access denied" in denied.err and "s3:PutObject" in denied.err
    assert "testing" not in denied.err                 # the secret key is not echoed


# -- export / import ---------------------------------------------------------------------------
def test_export_import_between_sqlite_and_s3(tmp_path, journal, s3_store, capsys):
    from tests.helpers import run_cli
    from mlserve.state import State
    url, _ = journal
    local = tmp_path / "state"
    state = State(local)
    seq = state.add_release("local", "r1", "local", "h1", {"name": "hello"}, "http://a",
                            files={"model.py": ("ab" * 32, False, 10)}, requirements=["numpy"])
    state.finish_release(seq, "serving")
    seq2 = state.add_release("local", "r2", "local", "h2", {"name": "hello"}, "http://a")
    state.finish_release(seq2, "serving")
    state.event("local", "noop", "nothing changed")
    state.close()
    exported = run_cli(capsys, "journal", "export", "--state", str(local))
    assert exported.code == 0, exported.err
    document = tmp_path / "journal.json"
    document.write_text(exported.out)
    imported = run_cli(capsys, "journal", "import", str(document), "--state", url, "--json")
    assert imported.code == 0, imported.err
    assert json.loads(imported.out)["releases"] == 2
    again = run_cli(capsys, "journal", "import", str(document), "--state", url)
    assert again.code == 2 and "is not empty" in again.err and "--force" in again.err
    assert run_cli(capsys, "journal", "import", str(document), "--state", url, "--force").code == 0

    from mlserve.journal.s3 import S3State
    shared = S3State.for_reading(url)
    try:
        assert shared.current("local").release_id == "r2"
        assert shared.previous("local").release_id == "r1"
        assert shared.find_release("local", "r1").files == {"model.py": ("ab" * 32, False, 10)}
    finally:
        shared.close()
    back = run_cli(capsys, "journal", "export", "--state", url)
    first, second = json.loads(exported.out), json.loads(back.out)
    assert first["tables"] == second["tables"]
    # and back into a new SQLite journal
    (tmp_path / "back.json").write_text(back.out)
    assert run_cli(capsys, "journal", "import", str(tmp_path / "back.json"), "--state",
                   str(tmp_path / "state2")).code == 0
    assert json.loads(run_cli(capsys, "journal", "export", "--state",
                              str(tmp_path / "state2")).out)["tables"] == first["tables"]


@pytest.mark.parametrize("text, fragment", [
    ("not json", "is not JSON"),
    ("[]", "is not an exported mlserve journal"),
    ('{"format": "mlserve-journal", "schema": 99, "tables": {}}', "schema 99"),
    ('{"format": "mlserve-journal", "schema": 2, "tables": {"releases": [{"evil": 1}]}}',
     "row 1 of releases is not a journal row"),
    ('{"format": "mlserve-journal", "schema": 2, "tables": {"releases": [{"seq": 1}]}}',
     "row 1 of releases cannot be stored"),
])
def test_import_refuses_bad_documents(tmp_path, capsys, text, fragment):
    from tests.helpers import run_cli
    source = tmp_path / "in.json"
    source.write_text(text)
    result = run_cli(capsys, "journal", "import", str(source), "--state", str(tmp_path / "s"))
    assert result.code == 2 and fragment in result.err and "Traceback" not in result.err
    assert not (tmp_path / "s").exists()          # refused before anything was created


# -- both journals read alike ------------------------------------------------------------------
def _operations():
    from hypothesis import strategies as st
    target = st.sampled_from(["a", "b"])
    seq = st.integers(1, 12)
    text = st.text(max_size=8)
    extra = st.dictionaries(st.sampled_from(["pid", "port", "note"]),
                            st.integers(0, 9) | text, max_size=2)
    at = st.floats(1e9, 2e9, allow_nan=False)
    return st.lists(st.one_of(
        st.builds(lambda t, r, e, a: {"op": "add_release", "at": a, "target": t, "release_id": r,
                                      "provider": "local", "bundle_hash": "h", "manifest": {"name": "n"},
                                      "url": None, "extra": e, "files": None, "requirements": None},
                  target, text, extra, at),
        st.builds(lambda s, o, e, a: {"op": "finish_release", "at": a, "seq": s, "outcome": o,
                                      "reason": None, "extra": e, "url": None},
                  seq, st.sampled_from(["serving", "failed"]), extra, at),
        st.builds(lambda s, a: {"op": "discard_release", "at": a, "seq": s}, seq, at),
        st.builds(lambda s, e, a: {"op": "update_extra", "at": a, "seq": s, "extra": e}, seq, extra, at),
        st.builds(lambda t, a: {"op": "mark_deleted", "at": a, "target": t, "provider": "local",
                                "name": "n"}, target, at),
        st.builds(lambda t, m, a: {"op": "event", "at": a, "target": t, "kind": "k", "message": m},
                  target, text, at),
    ), max_size=14)


def test_s3_journal_replays_to_what_sqlite_holds(journal, tmp_path_factory):
    """Any sequence of writes: the SQLite journal, the S3 writer's replica and a new S3 reader
    (checkpoint + log) hold the same rows, sequence numbers included."""
    from hypothesis import given, settings
    from mlserve.journal import Location
    from mlserve.journal.s3 import S3State
    from mlserve.journal.transfer import export_journal
    from mlserve.state import State
    url, _ = journal
    counter = iter(range(10 ** 6))

    @settings(max_examples=12)
    @given(_operations())
    def check(operations):
        number = next(counter)
        local = tmp_path_factory.mktemp("replay")
        prefix = f"{url}/case{number}"
        sqlite, shared = State(local), S3State(prefix)
        results = [(sqlite._write(o), shared._write(o)) for o in operations]
        assert all(a == b for a, b in results)
        sqlite.close()
        shared_tables = {t: [dict(r) for r in shared._db.execute(
            f"SELECT * FROM {t} ORDER BY {'target' if t == 'deployments' else 'seq'}")]
            for t in ("deployments", "releases", "events")}
        shared.close()
        expected = export_journal(Location(local))["tables"]
        assert shared_tables == expected
        assert export_journal(Location(local, prefix))["tables"] == expected
    check()


def test_migrate_locks_and_records_in_the_shared_journal(tmp_path, journal, capsys):
    from mlserve import service
    from mlserve.errors import MlserveError
    from mlserve.journal.s3 import S3State
    from tests.helpers import run_cli
    from tests.infra.net import free_port
    from tests.test_migrate import _local, _project as migrate_project
    url, _ = journal
    project = migrate_project(tmp_path, {"a": _local(free_port()), "b": _local(free_port())})
    try:
        first = service.deploy(project, "a", url)
        holder = S3State(url)
        with holder.lock("b", "deploy"):            # another machine deploys the destination
            busy = run_cli(capsys, "migrate", "--from", "a", "--to", "b", "-f", str(project),
                           "--state", url, "--yes")
        assert busy.code == 1 and "target 'b' is busy: deploy by pid" in busy.err
        done = run_cli(capsys, "migrate", "--from", "a", "--to", "b", "-f", str(project),
                       "--state", url, "--yes", "--json")
        assert done.code == 0, done.err
        assert json.loads(done.out)["release"] == first.release
        reader = S3State.for_reading(url)
        try:
            assert reader.current("b").release_id == first.release
            assert [e["kind"] for e in reader.events("b")][-1] == "migrated"
            assert reader.current("a") is None            # deleted, recorded in the journal
        finally:
            reader.close()
        holder.close()
    finally:
        for target in ("a", "b"):
            try:
                service.delete(project, target, url)
            except MlserveError:
                pass                                   # nothing deployed there


# -- obstore's errors, as S3 answers them, become one message each ---------------------------
@pytest.mark.parametrize("raised, expected", [
    ("PreconditionError", "Conflict"),
    ("AlreadyExistsError", "Conflict"),
    ("FileNotFoundError:<Code>NoSuchKey</Code>", "Absent"),
    ("FileNotFoundError:<Code>NoSuchBucket</Code>", "bucket 'b' does not exist"),
    ("PermissionError:<Code>AccessDenied</Code>", "access denied"),
    ("GenericError:<Code>InvalidAccessKeyId</Code>", "access denied"),
    ("GenericError:<Code>PermanentRedirect</Code>", "in another region"),
    ("GenericError:error sending request\n  tcp connect error ConnectionRefused",
     "Could not connect to the store"),
    ("GenericError:<Code>InternalError</Code> after 3 retries", "InternalError"),
])
def test_store_errors_are_translated(raised, expected):
    import obstore.exceptions as ox
    from mlserve.errors import MlserveError
    from mlserve.journal.s3client import Absent, Conflict, translated
    kind, _, text = raised.partition(":")
    error = getattr(ox, kind, None) or {"FileNotFoundError": FileNotFoundError,
                                         "PermissionError": PermissionError}[kind]
    with pytest.raises((Absent, Conflict, MlserveError)) as caught:
        with translated("s3://b/p", "cannot be read"):
            raise error(text or kind)
    if expected in ("Absent", "Conflict"):
        assert type(caught.value).__name__ == expected
    else:
        assert isinstance(caught.value, MlserveError) and expected in caught.value.message
        assert "Debug source" not in caught.value.message and caught.value.fix
