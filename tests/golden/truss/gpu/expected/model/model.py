"""Truss model for the mlserve model big-model: rendered by `mlserve build`, do not edit.

The model's own code is in app/ beside this file, unchanged; mlserve_shim loads it the way
`mlserve serve` does. The request body is the model's payload; the response is its output.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mlserve_shim import Shim  # noqa: E402

SHIM = Shim(
    app_dir='app',
    entrypoint='model.py:Model',
    env={'GREETING': 'it\'s "quoted" $(not run) `nor this`', 'UNICODE': 'héllo ✓'},
    secret_names=['API_TOKEN', 'HF_TOKEN'],
)


class Model:
    def __init__(self, **kwargs):
        self._secrets = kwargs.get("secrets")

    def load(self):
        SHIM.load(self._secrets)

    def predict(self, model_input):
        return SHIM.predict(model_input)
