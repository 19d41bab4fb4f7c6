"""A dependency-free model: doubles a list of numbers.

mlserve's whole contract: a class with ``load()`` (called once, before the first request) and
``predict(payload)`` (called per request with the JSON ``input``; returns anything JSON can hold).
"""

import os


class Model:
    def load(self) -> None:
        # Real models read weights here; this one reads its factor from the manifest's env.
        self.factor = int(os.environ.get("FACTOR", "2"))
        self.greeting = os.environ.get("GREETING", "hello")

    def predict(self, payload: dict) -> dict:
        return {"y": [v * self.factor for v in payload["x"]]}
