"""``python -m tests.emulators.vertex --docker-host unix://...``: serve the Vertex AI emulator
until SIGTERM (see README.md). It writes its port to ``--port-file`` once it listens."""

from __future__ import annotations

import argparse
import logging
import os
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.emulators.vertex")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", help="write the port here once listening")
    parser.add_argument("--docker-host", required=True, help="the engine replicas run on")
    parser.add_argument("--project", default="mlsv-test-project")
    parser.add_argument("--project-number", default="123456789012")
    parser.add_argument("--label", default=f"mlsv-vx-{os.getpid()}",
                        help="label (and name prefix) of every container started")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(message)s")
    from .containers import Engine
    from .server import make_server
    from .store import Store
    from .. import serve_until_signalled

    engine = Engine(args.docker_host, args.label)
    store = Store(engine, args.project, args.project_number)
    server = make_server(store, args.host, args.port)
    logging.info("Vertex AI emulator listening on %s:%d", args.host, server.server_address[1])
    serve_until_signalled(server, args.port_file, engine.remove_all)
    return 0

if __name__ == "__main__":
    sys.exit(main())
