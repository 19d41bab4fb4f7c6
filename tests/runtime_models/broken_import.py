"""Fails at import time, like a model whose dependency is not installed."""

import mlserve_package_that_does_not_exist  # noqa: F401


class Model:
    def predict(self, payload):
        return payload
