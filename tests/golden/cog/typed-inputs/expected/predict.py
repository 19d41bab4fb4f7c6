"""Cog runner for the mlserve model typed: rendered by `mlserve build`, do not edit.

The model's own code is in app/, unchanged; mlserve_shim loads it the way `mlserve serve` does.
Request: {"input": {<field>: <value>, ...}}, one typed parameter per field of the manifest's
model.inputs; run() rebuilds the payload dict from them and passes it to predict(). The output
is what predict() returns, opaque JSON to Cog (cog.Opaque).
"""

import os
import sys
from copy import deepcopy as Fresh  # capitalised: cannot clash with a field (a parameter) name
from typing import Annotated, Any

from cog import BaseRunner, Input, Opaque, concurrent

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from mlserve_shim import Shim  # noqa: E402

SHIM = Shim(
    app_dir='app',
    entrypoint='model.py:Model',
    env={},
    secret_names=[],
)


class Runner(BaseRunner):
    def setup(self) -> None:
        SHIM.load()

    @concurrent(max=4)
    async def run(
        self,
        x: list[float] = Input(description='Numbers to double'),
        scale: int = Input(default=2, description='''Multiplier, it's "x" times `n`
second line: héllo ✓''', ge=1, le=10),
        mode: str = Input(default='fast', choices=['fast', '''it's "exact"''']),
        temperature: float = Input(default=0.5, ge=0, le=1.5),
        verbose: bool = Input(default=False),
        options: dict = Input(default={'beam': 4, 'stop': ['''

''']}),
        pattern: str = Input(default=r'C:\models\*.bin'),
    ) -> Annotated[Any, Opaque]:
        return await SHIM.apredict({
            'x': x,
            'scale': scale,
            'mode': mode,
            'temperature': temperature,
            'verbose': verbose,
            'options': Fresh(options),
            'pattern': pattern,
        })
