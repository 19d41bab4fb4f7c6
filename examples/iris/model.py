"""An iris classifier (scikit-learn) loaded from a small artifact file shipped beside this one."""

from pathlib import Path

import joblib


class Model:
    def load(self) -> None:
        artifact = joblib.load(Path(__file__).with_name("model.joblib"))
        self.model = artifact["model"]
        self.classes = [str(c) for c in artifact["classes"]]

    def predict(self, payload: dict) -> dict:
        return self.predict_batch([payload])[0]

    def predict_batch(self, payloads: list[dict]) -> list[dict]:
        # One call into scikit-learn for all the requests the server gathered at once.
        rows = [p["features"] for p in payloads]
        probabilities = self.model.predict_proba(rows)
        return [{"class": self.classes[int(p.argmax())], "probability": round(float(p.max()), 4)}
                for p in probabilities]
