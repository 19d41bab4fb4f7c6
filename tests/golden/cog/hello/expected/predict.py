"""Cog runner for the mlserve model hello: rendered by `mlserve build`, do not edit.

The model's own code is in app/, unchanged; mlserve_shim loads it the way `mlserve serve` does.
Request: {"input": {"input": <the model's payload>}}; the output is what predict() returns. Both
are opaque JSON to Cog (cog.Opaque): the model's own code decides what they hold.
"""

import os
import sys
from typing import Annotated, Any

from cog import BaseRunner, Input, Opaque, concurrent

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mlserve_shim import Shim  # noqa: E402

SHIM = Shim(
    app_dir='app',
    entrypoint='model.py:Model',
    env={'FACTOR': '2'},
    secret_names=[],
)


class Runner(BaseRunner):
    def setup(self) -> None:
        SHIM.load()

    @concurrent(max=8)
    async def run(
        self,
        input: Annotated[Any, Opaque] = Input(
            description="The model's input: what mlserve sends as {\"input\": ...}."),
    ) -> Annotated[Any, Opaque]:
        return await SHIM.apredict(input)
