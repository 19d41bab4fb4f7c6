"""Running the helper on a host: one SSH exec per operation, JSON in and out.

The command line is a short inline bootstrap (``LAUNCH``) that runs the helper archive from the
host's object store, or exits 99 when the host does not have it yet; the call is then retried on
an exec that is sent the archive first, keeps it (``INSTALL`` checks its hash) and runs it at once
(``INSTALL_AND_LAUNCH``). Requests are JSON lines on stdin (``{"op": ..., ...}``), each followed
by object contents for uploads; each result is one JSON line on stdout. Channel and socket
failures become ``MlserveError`` here.
"""

from __future__ import annotations

import json
import shlex
import textwrap
from typing import Iterator

from ...errors import MlserveError, ProviderError
from .connection import Connection, translate
from .sync import Blob, Plan

CHUNK = 1 << 20
NO_BASE_DIR, MISSING_HELPER = 98, 99
# Without base_dir nothing of mlserve's is on the host: status and delete answer that without
# installing anything (a `status` must not leave a directory behind).
WHEN_NOTHING_THERE = {
    "status": {"ok": True, "current": {"release": None, "alive": False, "healthy": False}},
    "delete": {"ok": True, "removed": [], "base_removed": True},
    "stop": {"ok": True},
}
# Runs the archive by putting it on sys.path and calling its main (runpy.run_path would import
# pkgutil and runpy: ~10 ms of the host's CPU on every exec).
RUN_HELPER = "sys.path.insert(0,p);from mlserve_host.main import main;sys.exit(main(sys.argv))"
LAUNCH = ("import os,sys;b=sys.argv[1];p=os.path.join(os.path.expanduser(b),'objects',sys.argv[2])\n"
          "os.path.isdir(os.path.dirname(os.path.dirname(p))) or sys.exit(98)\n"
          "os.path.isfile(p) or sys.exit(99)\n"
          "sys.argv=[p,b]+sys.argv[3:];" + RUN_HELPER)
INSTALL = ("import hashlib,os,sys;b=os.path.expanduser(sys.argv[1]);h=sys.argv[2]\n"
           "d=sys.stdin.buffer.read(int(sys.argv[3]))\n"
           "hashlib.sha256(d).hexdigest()==h or sys.exit('mlserve: the helper arrived incomplete')\n"
           "try:os.makedirs(b,0o700)\n"
           "except FileExistsError:pass\n"
           "else:open(os.path.join(b,'.mlserve-base'),'w').write('created by mlserve; removed "
           "with its last deployment\\n')\n"
           "o=os.path.join(b,'objects');os.makedirs(o,0o700,exist_ok=True)\n"
           "t=os.path.join(o,'.%s.%s'%(h,os.urandom(4).hex()));open(t,'wb').write(d);os.chmod(t,0o444)\n"
           "os.replace(t,os.path.join(o,h))")
# INSTALL, then the helper at once in the same process (``BASE DIGEST SIZE OP``): a host without
# the helper costs one SSH exec (a login shell and an interpreter) less. 97: the install failed.
INSTALL_FAILED = 97
INSTALL_AND_LAUNCH = ("import sys\ntry:\n" + textwrap.indent(INSTALL, " ") + "\n"
                      "except BaseException as e:\n"
                      " import traceback;sys.stderr.write(str(e.code) if isinstance(e,SystemExit)"
                      f" else traceback.format_exc());sys.exit({INSTALL_FAILED})\n"
                      "p=os.path.join(o,h);sys.argv=[p,sys.argv[1]]+sys.argv[4:]\n" + RUN_HELPER)


class HostFailure(MlserveError):
    """The helper reported a failure (``reason``, log tail in ``details``)."""

    def __init__(self, message: str, reason: str = "", **kw) -> None:
        super().__init__(message, **kw)
        self.reason = reason or message


class Agent:
    """Calls helper operations on one connected host, over one long-lived SSH exec.

    Every exec pays for the login shell (and its rc files) and a Python start on the host, so
    one helper process (``serve``) answers all of a command's requests in turn.
    """

    def __init__(self, conn: Connection, options, target_name: str, helper: Blob) -> None:
        self.conn, self.options, self.target_name, self.helper = conn, options, target_name, helper
        self.file_bytes = 0
        self.files_sent = 0
        self._channel = None
        self._buffer = b""

    @property
    def label(self) -> str:
        return self.conn.spec.label

    def _command(self, script: str, *args: str) -> str:
        # -I: the login's PYTHONPATH, PYTHONHOME or user site must not change the helper
        return " ".join([shlex.quote(self.options.python), "-I", "-c", shlex.quote(script),
                         *(shlex.quote(a) for a in args)])

    def _open(self, command: str, timeout: float | None):
        channel = self.conn.client.get_transport().open_session(timeout=self.options.connect_timeout)
        channel.settimeout(timeout)
        channel.exec_command(command)
        return channel

    def call(self, op: str, request: dict, *, timeout: float | None = 120.0,
             plan: Plan | None = None, missing: list | None = None) -> dict:
        """Run ``op``; send the ``missing`` objects of ``plan`` after the request."""
        try:
            result = self._call(op, request, timeout, plan, missing)
            if result == NO_BASE_DIR and op in WHEN_NOTHING_THERE:
                return dict(WHEN_NOTHING_THERE[op])
            if isinstance(result, int):     # the helper (this version) is not on the host yet
                result = self._call(op, request, timeout, plan, missing, install=True)
        except MlserveError:
            raise
        except Exception as exc:  # noqa: BLE001 - paramiko/socket errors, translated below
            self.close()
            error = translate(exc, self.conn.spec, self.options, self.target_name)
            if error is None:
                raise
            if missing:
                error.message += " (during the upload)"
            raise error from None
        if result.get("ok"):
            return result
        raise HostFailure(f"{self.label}: {result.get('reason')}", result.get("reason") or "",
                          fix=result.get("fix") or None,
                          details=(f"last lines of the log on {self.label}:\n{result['log']}"
                                   if result.get("log") else None))

    def _call(self, op, request, timeout, plan, missing, install=False) -> dict | int:
        """The result, or the launcher's exit code when it found no base_dir or no helper.
        ``install``: send the helper first, on a new channel that installs it and runs it."""
        fresh = self._channel is None
        if fresh:
            size = [str(self.helper.size)] if install else []
            self._channel = self._open(self._command(INSTALL_AND_LAUNCH if install else LAUNCH,
                                                     self.options.base_dir, self.helper.digest,
                                                     *size, "serve"), timeout)
            if install:
                self._channel.sendall(self.helper.data)
        channel = self._channel
        channel.settimeout(timeout)
        channel.sendall(json.dumps({"op": op, **request}).encode() + b"\n")
        for digest, offset in missing or []:
            self._send_object(channel, plan.blobs[digest], offset)
        line = self._read_line(channel)
        if line is not None:
            return json.loads(line)
        err = _read_all(channel.recv_stderr)
        code = channel.recv_exit_status()
        self.close()
        if install and code == INSTALL_FAILED:
            raise self._install_failure(code, err)
        if code in (NO_BASE_DIR, MISSING_HELPER) and fresh and not missing and not install:
            return code
        raise ProviderError(f"the mlserve helper failed on {self.label} (exit {code})",
                            fix="check that `python` in the target names Python >= 3.10 on the "
                                "host; run with --debug and report the output",
                            details=err.decode(errors="replace")[-3000:] or None)

    def _read_line(self, channel) -> bytes | None:
        while b"\n" not in self._buffer:
            chunk = channel.recv(65536)
            if not chunk:
                return None
            self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def close(self) -> None:
        channel, self._channel, self._buffer = self._channel, None, b""
        if channel is not None:
            try:
                channel.close()
            except (OSError, EOFError):     # the connection is already gone
                pass

    def _send_object(self, channel, blob: Blob, offset: int) -> None:
        with blob.open() as fh:
            fh.seek(offset)
            while chunk := fh.read(CHUNK):
                channel.sendall(chunk)
                self.file_bytes += len(chunk)
        self.files_sent += 1

    def _install_helper(self) -> None:
        command = self._command(INSTALL, self.options.base_dir, self.helper.digest,
                                str(self.helper.size))
        channel = self._open(command, 60)
        try:
            channel.sendall(self.helper.data)
            channel.shutdown_write()
            err = _read_all(channel.recv_stderr)
            code = channel.recv_exit_status()
        finally:
            channel.close()
        if code:
            raise self._install_failure(code, err)

    def _install_failure(self, code: int, err: bytes) -> ProviderError:
        return ProviderError(f"cannot install mlserve's helper on {self.label} with "
                             f"{self.options.python!r} (exit {code})",
                             where=f"targets.{self.target_name}.python",
                             fix="point `python` at a Python 3 interpreter on the host, and "
                                 "check that base_dir is writable by the login user",
                             details=err.decode(errors="replace")[-2000:])

    def lines(self, op: str, request: dict, installed: bool = False) -> Iterator[str]:
        """Stream the text lines an operation prints (``logs``), until it ends."""
        command = self._command(LAUNCH, self.options.base_dir, self.helper.digest, op)
        try:
            channel = self._open(command, None)
        except Exception as exc:  # noqa: BLE001
            raise translate(exc, self.conn.spec, self.options, self.target_name) or exc from None
        try:
            channel.sendall(json.dumps(request).encode() + b"\n")
            buffer = b""
            for chunk in iter(lambda: channel.recv(65536), b""):
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                for line in complete:
                    if line.startswith(b'{"ok": '):       # the result ends the output
                        result = json.loads(line)
                        if not result.get("ok"):
                            raise HostFailure(f"{self.label}: {result.get('reason')}")
                        return
                    yield line.decode(errors="replace")
            code = channel.recv_exit_status()
            if code == NO_BASE_DIR or (code == MISSING_HELPER and installed):
                raise HostFailure(f"{self.label}: nothing is deployed there")
        except MlserveError:
            raise
        except Exception as exc:  # noqa: BLE001 - the connection dropped while following
            raise translate(exc, self.conn.spec, self.options, self.target_name) or exc from None
        finally:
            channel.close()
        if code == MISSING_HELPER and not installed:      # deployed by another mlserve version
            self._install_helper()
            yield from self.lines(op, request, installed=True)


def _read_all(recv) -> bytes:
    parts = []
    for chunk in iter(lambda: recv(65536), b""):
        parts.append(chunk)
    return b"".join(parts)
