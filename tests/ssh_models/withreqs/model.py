"""Test model with a requirement: ``mlsvtiny``, a wheel shipped in the bundle (hosts are offline)."""

import mlsvtiny

VERSION = "v1"


class Model:
    def load(self) -> None:
        self.answer = mlsvtiny.ANSWER

    def predict(self, payload: dict) -> dict:
        return {"answer": self.answer, "version": VERSION, "tiny": mlsvtiny.__file__}
