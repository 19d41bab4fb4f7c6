"""The batching benchmark's model: a numpy MLP 1024 -> 4096 -> 4096 -> 10 (float32, ReLU).

Weights come from a fixed seed, so every server computes the same outputs. ``predict`` takes one
list of 1,024 numbers and returns 10; ``predict_batch`` takes a list of those. With BLAS limited
to one thread (``OPENBLAS_NUM_THREADS=1``), a batch of 64 costs far less than 64 single calls:
the weights are read once per batch instead of once per request.
"""

import numpy as np

SIZES = (1024, 4096, 4096, 10)


class Model:
    def load(self):
        rng = np.random.default_rng(14)
        self.layers = [((rng.standard_normal((a, b), dtype=np.float32) / np.float32(np.sqrt(a))),
                        np.zeros(b, dtype=np.float32)) for a, b in zip(SIZES, SIZES[1:])]

    def _forward(self, x):
        last = len(self.layers) - 1
        for index, (weights, bias) in enumerate(self.layers):
            x = x @ weights
            x += bias
            if index < last:
                np.maximum(x, 0, out=x)
        return x

    def predict(self, payload):
        return self._forward(np.asarray(payload, dtype=np.float32)[None, :])[0].tolist()

    def predict_batch(self, payloads):
        return self._forward(np.asarray(payloads, dtype=np.float32)).tolist()
