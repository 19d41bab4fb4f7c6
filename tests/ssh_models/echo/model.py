"""Test model for the SSH adapter: dependency-free; answers with its version and host."""

import os
import socket

VERSION = "v1"


class Model:
    def load(self) -> None:
        if os.environ.get("FAIL_LOAD"):
            raise RuntimeError("load failed on purpose: " + os.environ["FAIL_LOAD"])
        self.factor = int(os.environ.get("FACTOR", "2"))

    def predict(self, payload: dict) -> dict:
        return {"y": [v * self.factor for v in payload["x"]], "version": VERSION,
                "pid": os.getpid(), "host": socket.gethostname()}
