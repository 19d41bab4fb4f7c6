"""``python -m mlserve.cli`` runs the command line (same as the ``mlserve`` console script)."""

from .main import run

run()
