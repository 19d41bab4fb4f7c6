"""The bridge between a foreign model server (Cog, Truss) and the user's unchanged model class.

Copied verbatim into Cog and Truss build contexts as ``mlserve_shim.py``, next to the rendered
wrapper (``predict.py`` / ``model/model.py``) and the ``mlserve/runtime`` package. It imports only
the standard library and ``mlserve.runtime.loader``, so the class is found, imported and loaded
exactly as ``mlserve serve`` does it.

``Shim(app_dir, entrypoint, env, secret_names)``:

- ``load()`` sets the manifest's environment (``os.environ.setdefault``: a value the platform
  sets at run time wins), checks that the named secrets are present *by name* (values are never
  read here, written or logged) and calls the runtime loader: the class is instantiated once and
  its ``load()`` runs once.
- ``predict(payload)`` calls ``predict(payload)``, or ``predict_batch([payload])[0]`` for
  batch-only models; an ``async def predict`` runs on a private event loop thread.
- ``apredict(payload)`` is the same for async servers: a plain ``predict`` runs in a worker
  thread so it never blocks the server's loop.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import sys
import threading
from typing import Any


class Shim:
    def __init__(self, app_dir: str, entrypoint: str, env: dict, secret_names: list) -> None:
        here = os.path.dirname(os.path.abspath(__file__))
        self.app_dir = os.path.join(here, app_dir)  # relative to this file, wherever it lands
        self.entrypoint = entrypoint
        self.env = dict(env)
        self.secret_names = list(secret_names)
        self.model: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None

    def apply_env(self, secrets: dict | None = None) -> None:
        """Set the manifest's env; copy named secrets a platform handed over (Truss) into it."""
        for name, value in self.env.items():
            os.environ.setdefault(name, value)
        for name in self.secret_names:
            value = _lookup(secrets, name)
            if value:
                os.environ.setdefault(name, str(value))
        missing = [n for n in self.secret_names if not os.environ.get(n)]
        if missing:
            print(f"mlserve: secret(s) {', '.join(missing)} not set in the environment",
                  file=sys.stderr, flush=True)

    def load(self, secrets: dict | None = None) -> None:
        self.apply_env(secrets)
        from mlserve.runtime.loader import load_model, prepare_app_dir

        self.model = load_model(prepare_app_dir(self.app_dir), self.entrypoint)

    def _call(self, payload: Any) -> Any:
        predict = getattr(self.model, "predict", None)
        if callable(predict):
            return predict(payload)
        return self.model.predict_batch([payload])[0]

    def predict(self, payload: Any) -> Any:
        result = self._call(payload)
        if inspect.isawaitable(result):
            future = asyncio.run_coroutine_threadsafe(_await(result), self._private_loop())
            return future.result()
        return result

    async def apredict(self, payload: Any) -> Any:
        predict = getattr(self.model, "predict", None)
        if callable(predict) and inspect.iscoroutinefunction(predict):
            return await predict(payload)
        return await asyncio.to_thread(self.predict, payload)

    def _private_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            loop = asyncio.new_event_loop()
            threading.Thread(target=loop.run_forever, name="mlserve-async-predict",
                             daemon=True).start()
            self._loop = loop
        return self._loop


def _lookup(secrets: Any, name: str) -> Any:
    """A secret from a platform's mapping; Truss's raises its own error for a missing one."""
    if secrets is None:
        return None
    try:
        return secrets[name]
    except Exception:  # noqa: BLE001 - absent, whatever the platform calls it
        return None


async def _await(awaitable: Any) -> Any:
    return await awaitable
