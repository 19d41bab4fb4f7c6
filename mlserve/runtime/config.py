"""Runtime settings: command-line flags first, then environment variables, then defaults.

Containers configure the runtime through the environment (``MLSERVE_*`` and the providers' own
variables such as Vertex AI's ``AIP_HTTP_PORT``); the local and SSH deployers pass flags.
Environment *values* are never logged: some of them are secrets.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field

DEFAULT_PORT = 8080
DEFAULT_CONCURRENCY = 4
DEFAULT_MAX_BODY_BYTES = 10 * 1024 * 1024
DEFAULT_MAX_BATCH_SIZE = 32
DEFAULT_MAX_BATCH_WAIT_MS = 10
DEFAULT_GRACEFUL_TIMEOUT = 30.0
#: Secret values shorter than this are not masked: masking "a" or "1" everywhere would wreck every
#: log line and hide nothing worth hiding. The runtime warns, naming the variable (never its value).
MIN_SECRET_CHARS = 4


@dataclass
class Settings:
    app_dir: str = "."
    entrypoint: str = "model.py:Model"
    name: str = "model"
    host: str = "0.0.0.0"
    port: int = DEFAULT_PORT
    check_port: int | None = None
    concurrency: int = DEFAULT_CONCURRENCY
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_batch_wait_ms: int = DEFAULT_MAX_BATCH_WAIT_MS
    graceful_timeout: float = DEFAULT_GRACEFUL_TIMEOUT
    release: str = ""
    access_log: bool = True
    vertex_health_route: str | None = None
    vertex_predict_route: str | None = None
    secrets: list[str] = field(default_factory=list)
    short_secret_names: list[str] = field(default_factory=list)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def _port(text: str) -> int:
    value = int(text)
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"not a TCP port: {value}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m mlserve.runtime",
        description="Serve one model class over HTTP with every provider's routes "
        "(mlserve, SageMaker, Vertex AI, Azure ML, KServe v1).",
        epilog="Each flag falls back to an environment variable (MLSERVE_APP_DIR, MLSERVE_ENTRYPOINT, "
        "MLSERVE_NAME, MLSERVE_HOST, MLSERVE_PORT, MLSERVE_CONCURRENCY, MLSERVE_MAX_BODY_BYTES, "
        "MLSERVE_MAX_BATCH_SIZE, MLSERVE_MAX_BATCH_WAIT_MS, MLSERVE_GRACEFUL_TIMEOUT, MLSERVE_RELEASE, MLSERVE_ACCESS_LOG=0). "
        "Port: --port, then AIP_HTTP_PORT, then MLSERVE_PORT, then 8080. "
        "MLSERVE_SECRET_NAMES lists variables whose values (of 4 characters or more) are masked in "
        "everything the process and its children write to stdout and stderr, and in error bodies.",
    )
    parser.add_argument("command", nargs="?", choices=["serve"], help="accepted for SageMaker ('docker run IMAGE serve')")
    parser.add_argument("--app-dir", help="directory holding the model code (default: .)")
    parser.add_argument("--entrypoint", help="FILE.py:Class inside the app dir (default: model.py:Model)")
    parser.add_argument("--name", help="model name for /health and KServe routes (default: model)")
    parser.add_argument("--host", help="address of the public socket (default: 0.0.0.0)")
    parser.add_argument("--port", type=_port, help="public port (default: 8080)")
    parser.add_argument(
        "--check-port",
        type=_port,
        help="listen only on 127.0.0.1:CHECK_PORT (0: a free port, named in the log's 'listening on' line); "
        "bind the public port and serve it after SIGUSR1",
    )
    parser.add_argument("--concurrency", type=_positive_int, help="predict calls in flight at most (default: 4)")
    parser.add_argument("--max-body-bytes", type=_positive_int, help="largest request body (default: 10 MiB)")
    parser.add_argument("--max-batch-size", type=_positive_int, help="largest predict_batch call (default: 32)")
    parser.add_argument("--max-batch-wait-ms", type=_non_negative_int,
                        help="longest a partial batch is held for requests that are due, from when the model is free (default: 10)")
    parser.add_argument("--graceful-timeout", type=float, help="seconds to drain on SIGTERM (default: 30)")
    parser.add_argument("--release", help="release id reported by /health")
    parser.add_argument("--no-access-log", action="store_true", help="do not write one line per request")
    return parser


def _env_int(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        return int(raw)
    except ValueError:
        raise SystemExit(f"mlserve.runtime: {name} must be an integer, got {raw!r}") from None


def _pick_int(flag: int | None, env: dict[str, str], name: str, default: int) -> int:
    return flag if flag is not None else max(0, _env_int(env, name, default))


def _resolve_port(flag: int | None, env: dict[str, str]) -> int:
    if flag is not None:
        return flag
    for name in ("AIP_HTTP_PORT", "MLSERVE_PORT"):
        if env.get(name, "").strip():
            return _env_int(env, name, DEFAULT_PORT)
    return DEFAULT_PORT


def _secret_names(env: dict[str, str]) -> list[str]:
    return [n.strip() for n in env.get("MLSERVE_SECRET_NAMES", "").split(",") if n.strip()]


def _secret_values(env: dict[str, str]) -> list[str]:
    values = {env[n] for n in _secret_names(env) if len(env.get(n, "")) >= MIN_SECRET_CHARS}
    # Longest first, so a secret that contains another is masked whole.
    return sorted(values, key=len, reverse=True)


def _short_secret_names(env: dict[str, str]) -> list[str]:
    return [n for n in _secret_names(env) if 0 < len(env.get(n, "")) < MIN_SECRET_CHARS]


def parse(argv: list[str] | None = None, env: dict[str, str] | None = None) -> Settings:
    """Build the settings from ``argv`` (default ``sys.argv[1:]``) and ``env`` (default ``os.environ``)."""
    env = dict(os.environ if env is None else env)
    args = _parser().parse_args(argv)

    def pick(flag, name: str, default: str) -> str:
        return flag if flag is not None else (env.get(name) or default)

    access_log = not args.no_access_log and env.get("MLSERVE_ACCESS_LOG", "1").strip().lower() not in ("0", "false", "no", "off")
    graceful = args.graceful_timeout
    if graceful is None:
        graceful = float(_env_int(env, "MLSERVE_GRACEFUL_TIMEOUT", int(DEFAULT_GRACEFUL_TIMEOUT)))
    return Settings(
        app_dir=pick(args.app_dir, "MLSERVE_APP_DIR", "."),
        entrypoint=pick(args.entrypoint, "MLSERVE_ENTRYPOINT", "model.py:Model"),
        name=pick(args.name, "MLSERVE_NAME", "model"),
        host=pick(args.host, "MLSERVE_HOST", "0.0.0.0"),
        port=_resolve_port(args.port, env),
        check_port=args.check_port,
        concurrency=args.concurrency or max(1, _env_int(env, "MLSERVE_CONCURRENCY", DEFAULT_CONCURRENCY)),
        max_body_bytes=args.max_body_bytes or max(1, _env_int(env, "MLSERVE_MAX_BODY_BYTES", DEFAULT_MAX_BODY_BYTES)),
        max_batch_size=args.max_batch_size or max(1, _env_int(env, "MLSERVE_MAX_BATCH_SIZE", DEFAULT_MAX_BATCH_SIZE)),
        max_batch_wait_ms=_pick_int(args.max_batch_wait_ms, env, "MLSERVE_MAX_BATCH_WAIT_MS", DEFAULT_MAX_BATCH_WAIT_MS),
        graceful_timeout=graceful,
        release=pick(args.release, "MLSERVE_RELEASE", ""),
        access_log=access_log,
        vertex_health_route=env.get("AIP_HEALTH_ROUTE") or None,
        vertex_predict_route=env.get("AIP_PREDICT_ROUTE") or None,
        secrets=_secret_values(env),
        short_secret_names=_short_secret_names(env),
    )
