"""``python -m mlserve.runtime [serve] [flags]``: see ``mlserve.runtime.config`` for the contract."""

import sys

from .config import parse


def main(argv: list[str] | None = None) -> int:
    settings = parse(argv)
    from .server import run  # uvicorn is imported only once there is something to serve

    return run(settings)


if __name__ == "__main__":
    sys.exit(main())
