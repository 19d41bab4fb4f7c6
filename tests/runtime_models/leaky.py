"""Models that print their secret (``MODEL_TOKEN``) every way a process can, for the masking tests.

``Leaky.predict({"via": WAY})`` writes a line holding the secret through WAY and returns WAY; the
test then reads the runtime's log files.
"""

import ctypes
import json
import logging
import multiprocessing
import os
import subprocess
import sys
import time
import warnings
from urllib.parse import quote


def _token() -> str:
    return os.environ["MODEL_TOKEN"]


def _split(token: str) -> None:
    sys.stdout.write(f"split {token[:5]}")
    sys.stdout.flush()
    time.sleep(0.3)  # far longer than the pump's idle flush: the first half must still wait
    sys.stdout.write(f"{token[5:]} end\n")
    sys.stdout.flush()


def _child(token: str) -> None:
    print(f"forked child {token}", flush=True)


def _libc(token: str) -> None:
    libc = ctypes.CDLL(None)
    libc.printf(b"libc printf %s\n", token.encode())
    libc.fflush(None)


WAYS = {
    "print": lambda t: print(f"print {t}", flush=True),
    "stderr": lambda t: (sys.stderr.write(f"stderr {t}\n"), sys.stderr.flush()),
    "logging": lambda t: logging.getLogger("leaky").warning("logging %s", t),
    "warnings": lambda t: warnings.warn(f"warnings {t}", stacklevel=1),
    "fd1": lambda t: os.write(1, f"fd1 {t}\n".encode()),
    "fd2": lambda t: os.write(2, f"fd2 {t}\n".encode()),
    "subprocess": lambda t: subprocess.run(["sh", "-c", 'printf "sh out %s\\n" "$MODEL_TOKEN"; printf "sh err %s\\n" "$MODEL_TOKEN" >&2'],
                                           check=True),
    "fork": lambda t: _fork(t),
    "libc": _libc,
    "split": _split,
    "repr": lambda t: print("repr", {"token": t}, flush=True),
    "json": lambda t: print("json", json.dumps({"token": t}), flush=True),
    "url": lambda t: print(f"url https://api.example/?key={quote(t, safe='')}", flush=True),
    "no-newline": lambda t: (sys.stdout.write(f"no newline {t}"), sys.stdout.flush()),
}


def _fork(token: str) -> None:
    process = multiprocessing.get_context("fork").Process(target=_child, args=(token,))
    process.start()
    process.join()


class Leaky:
    def load(self):
        print(f"load sees {_token()}", flush=True)

    def predict(self, payload):
        if payload.get("via") == "raise":
            raise RuntimeError(f"raise {_token()}")
        WAYS[payload["via"]](_token())
        return payload["via"]


class LeakyLoad:
    """Prints the secret, then fails to load with it in the message: a failed deploy's log tail."""

    def load(self):
        print(f"loading with {_token()}", flush=True)
        logging.basicConfig()
        logging.getLogger("leaky").error("about to fail with %s", _token())
        raise RuntimeError(f"cannot authenticate with {_token()}")

    def predict(self, payload):
        return payload


class Lingering:
    """load() starts a child that prints the secret and outlives the runtime (a sidecar)."""

    def load(self):
        child = subprocess.Popen(["sh", "-c", 'printf "sidecar has %s\\n" "$MODEL_TOKEN"; exec sleep 20'])
        with open(os.environ["SIDECAR_PID_FILE"], "w") as f:
            f.write(str(child.pid))  # for the test to stop it

    def predict(self, payload):
        return payload
