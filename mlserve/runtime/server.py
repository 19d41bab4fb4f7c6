"""Run the app on uvicorn: sockets, background load, zero-downtime handover, signals, exit codes.

Exit codes: 0 after a drained shutdown (SIGTERM/SIGINT), 1 when the model cannot be imported or
loaded, or the public socket cannot be bound.

Handover (``--check-port Q``): the runtime serves only 127.0.0.1:Q, where a deployer checks
health and smoke-tests, and holds the public socket bound (SO_REUSEPORT) but not listening. On
SIGUSR1 it listens there too and logs ``activated on HOST:PORT``. Every public socket sets
SO_REUSEPORT and, on Linux, a one-instruction classic BPF program that steers new connections to
the most recently activated listener in the port's group; so once a new release is active the old
one gets no new connections, and SIGTERM lets it drain without resetting any queued connection.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import importlib.util
import signal
import socket
import struct
import sys
import threading

from .app import App
from .config import MIN_SECRET_CHARS, Settings
from .batching import Batcher
from .dispatch import AsyncRunner, ThreadDispatcher
from .engines import detect
from .loader import EntrypointError, load_model, prepare_app_dir, split_entrypoint
from .logs import Logs, Redactor, route_uvicorn_logs
from .masking import mask_std_streams

BACKLOG = 2048
_SO_ATTACH_REUSEPORT_CBPF = 51  # Linux <asm-generic/socket.h>


def _import_uvicorn() -> tuple[type, type]:
    """uvicorn's ``Config`` and ``Server`` without running ``uvicorn/__init__.py`` first.

    That file imports ``uvicorn.main``, uvicorn's command line (click, the reload supervisors),
    which the runtime never uses: it costs every start ~20 ms of CPU, and a first start on an SSH
    host, where nothing of the shipped library is compiled yet, ~80 ms more. So the package is
    put in ``sys.modules`` uninitialised; looking up anything on it other than ``Config`` and
    ``Server`` (what uvicorn's own modules take from it) runs the real ``__init__`` (PEP 562
    ``__getattr__``), so a model that uses ``uvicorn`` itself still gets the whole package.
    """
    spec = None if "uvicorn" in sys.modules else importlib.util.find_spec("uvicorn")
    if spec is not None and spec.submodule_search_locations is not None and spec.loader:
        package = importlib.util.module_from_spec(spec)
        lock = threading.Lock()

        def complete(name: str):
            if name in ("Config", "Server"):
                return getattr(importlib.import_module(f"uvicorn.{name.lower()}"), name)
            with lock:
                if "__getattr__" in vars(package):
                    del package.__getattr__
                    spec.loader.exec_module(package)
            return getattr(package, name)

        package.__getattr__ = complete
        sys.modules["uvicorn"] = package
    from uvicorn.config import Config
    from uvicorn.server import Server

    return Config, Server


Config, Server = _import_uvicorn()


def _steer_to_newest(sock: socket.socket) -> None:
    """Make the port's reuseport group pick index 1 (the newer of two listeners).

    With one listener the index is out of range and the kernel falls back to its hash, so the
    program is harmless when alone; it replaces any program an older release attached.
    """
    import ctypes  # stdlib; only needed here

    program = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 1))  # BPF_RET|BPF_K 1
    fprog = struct.pack("HL", 1, ctypes.addressof(program))
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_REUSEPORT_CBPF, fprog)


def public_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if hasattr(socket, "SO_REUSEPORT"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    sock.setblocking(False)
    return sock


def check_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(BACKLOG)
    sock.setblocking(False)
    return sock


def listen_public(sock: socket.socket, logs: Logs) -> None:
    sock.listen(BACKLOG)
    if sys.platform.startswith("linux"):
        try:
            _steer_to_newest(sock)
        except OSError as exc:
            logs.event(f"warning: cannot steer connections to the newest release ({exc}); handover may reset a connection")


class Runtime:
    def __init__(self, settings: Settings, logs: Logs) -> None:
        self.settings = settings
        self.logs = logs
        self.app = App(settings, logs)
        self.exit_code = 0
        self.public: socket.socket | None = None
        self.server: Server | None = None
        self.runner = None
        self._activate_requested = False
        self._active = settings.check_port is None  # without a check port the public socket serves at once
        self._activation: asyncio.Task | None = None

    def _config(self) -> Config:
        if detect().http == "httptools":
            from .http11 import HttpProtocol as http  # the lean path (issue 14)
        else:
            http = "h11"
        return Config(
            self.app,
            http=http,
            ws="none",
            lifespan="off",
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_graceful_shutdown=self.settings.graceful_timeout,
            backlog=BACKLOG,
        )

    async def serve(self) -> int:
        loop = asyncio.get_running_loop()
        s = self.settings
        try:
            self.public = public_socket(s.host, s.port)
            if s.check_port is None:
                listen_public(self.public, self.logs)
                sockets = [self.public]
            else:
                sockets = [check_socket(s.check_port)]
        except OSError as exc:
            self.logs.event(f"error: cannot bind {s.host}:{s.port if self.public is None else s.check_port}: {exc}")
            return 1
        loop.add_signal_handler(signal.SIGUSR1, self._on_sigusr1)
        self.server = Server(self._config())
        serving = loop.create_task(self.server.serve(sockets=sockets))
        while not self.server.started and not serving.done():
            await asyncio.sleep(0.005)
        if serving.done():
            await serving
            return 1
        # The bound port, not the asked one: ``--check-port 0`` lets the kernel pick a free port
        # where the deployer cannot (a remote Docker engine), and it reads it from this line.
        bound = sockets[0].getsockname()[1]
        where = f"{s.host}:{s.port}" if s.check_port is None else f"127.0.0.1:{bound} (public {s.host}:{s.port} on SIGUSR1)"
        self.logs.event(f"listening on {where}; loading {s.entrypoint} from {s.app_dir}")
        if self._activate_requested:
            await self._activate()
        ticker = loop.create_task(self._tick())
        threading.Thread(target=self._load, args=(loop,), name="mlserve-load", daemon=True).start()
        try:
            await serving
        finally:
            ticker.cancel()
            if self.runner is not None:
                self.runner.stop()
            if self.public is not None:
                self.public.close()
            self.logs.flush_access()
        self.logs.event(f"stopped (exit {self.exit_code})")
        return self.exit_code

    async def _tick(self) -> None:
        while True:
            await asyncio.sleep(0.1)
            self.logs.tick()

    # -- loading -------------------------------------------------------------------------------

    def _load(self, loop: asyncio.AbstractEventLoop) -> None:
        s = self.settings
        try:
            model = load_model(s.app_dir, s.entrypoint)
        except BaseException as exc:  # noqa: BLE001 - any failure to load ends the process with exit code 1
            self.logs.failure(f"error: cannot load {s.entrypoint} from {s.app_dir}:", exc)
            loop.call_soon_threadsafe(self._fail)
            return
        loop.call_soon_threadsafe(self._ready, model)

    def _fail(self) -> None:
        self.exit_code = 1
        self.server.should_exit = True

    def _ready(self, model) -> None:
        s = self.settings
        predict = getattr(model, "predict", None)
        batch = getattr(model, "predict_batch", None)
        loop = asyncio.get_running_loop()
        if callable(batch):
            self.runner = Batcher(loop, batch, s.concurrency, s.max_batch_size, s.max_batch_wait_ms,
                                  self.app.clients.alone)
        elif not asyncio.iscoroutinefunction(predict):
            self.runner = ThreadDispatcher(loop, predict, s.concurrency)
        else:
            self.runner = AsyncRunner(predict, s.concurrency)
        self.app.set_ready(self.runner)
        kind = f"predict_batch, batches of {s.max_batch_size} at most, waiting {s.max_batch_wait_ms} ms at most" if callable(batch) else ("async predict" if isinstance(self.runner, AsyncRunner) else "predict")
        self.logs.event(f"ready: {s.name} release {s.release or '-'} ({kind}, concurrency {s.concurrency})")

    # -- handover ------------------------------------------------------------------------------

    def _on_sigusr1(self) -> None:
        if self.server is None or not self.server.started:
            self._activate_requested = True
            return
        self._activation = asyncio.get_running_loop().create_task(self._activate())

    async def _activate(self) -> None:
        s = self.settings
        if self._active:
            self.logs.event(f"already active on {s.host}:{s.port}")
            return
        self._active = True
        server = self.server
        loop = asyncio.get_running_loop()
        listen_public(self.public, self.logs)
        protocol = functools.partial(
            server.config.http_protocol_class,
            config=server.config,
            server_state=server.server_state,
            app_state=server.lifespan.state,
            _loop=loop,
        )
        server.servers.append(await loop.create_server(protocol, sock=self.public, backlog=BACKLOG))
        self.public = None  # the asyncio server owns it now and closes it on shutdown
        self.logs.event(f"activated on {s.host}:{s.port}")


def _new_loop() -> asyncio.AbstractEventLoop:
    if detect().loop == "uvloop":
        import uvloop

        return uvloop.new_event_loop()
    return asyncio.new_event_loop()


def run(settings: Settings) -> int:
    redact = Redactor(settings.secrets)
    # Before the model is imported: from here on nothing the process writes reaches a log unmasked.
    streams = mask_std_streams(redact.forms) if settings.secrets else None
    logs = Logs(redact, settings.access_log, *((streams.out, streams.err) if streams else ()))
    route_uvicorn_logs(logs)
    engines = detect()
    logs.event(f"starting: {engines.describe()}")
    for problem in engines.problems:
        logs.event(f"warning: {problem}; serving on the slower fallback")
    if settings.short_secret_names:
        logs.event(f"warning: secret(s) {', '.join(settings.short_secret_names)} shorter than {MIN_SECRET_CHARS} "
                   "characters are not masked in logs; use longer values")
    try:
        settings.app_dir = prepare_app_dir(settings.app_dir)
        split_entrypoint(settings.entrypoint)
    except EntrypointError as exc:
        logs.event(f"error: {exc}")
        return 1
    runtime = Runtime(settings, logs)

    def before_or_after_uvicorn(signum, frame) -> None:
        # uvicorn handles these while it serves and re-raises the one that stopped it once it
        # has drained: that must end in exit 0, not death by signal. Before it serves: exit now.
        if runtime.server is None:
            raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, before_or_after_uvicorn)
    loop = _new_loop()
    asyncio.set_event_loop(loop)
    try:
        return loop.run_until_complete(runtime.serve())
    finally:
        logs.flush_access()
        loop.close()
