"""Import the user's model class from ``FILE.py:Class`` and load it.

The app dir goes first on ``sys.path`` (so the model's own modules import) and becomes the working
directory (so relative paths to weights work). The file is imported under its dotted path
(``src/model.py`` -> ``src.model``) unless that name is already taken, e.g. by the stdlib.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from typing import Any


class EntrypointError(Exception):
    """The entrypoint string or file is wrong; the message says how to fix it."""


def split_entrypoint(entrypoint: str) -> tuple[str, str]:
    path, sep, class_name = entrypoint.rpartition(":")
    if not sep or not path.endswith(".py") or not class_name.isidentifier():
        raise EntrypointError(f"entrypoint {entrypoint!r} must look like FILE.py:ClassName, e.g. model.py:Model")
    return path, class_name


def prepare_app_dir(app_dir: str) -> str:
    app_dir = os.path.abspath(app_dir)
    if not os.path.isdir(app_dir):
        raise EntrypointError(f"app dir {app_dir} does not exist")
    os.chdir(app_dir)
    if app_dir not in sys.path:
        sys.path.insert(0, app_dir)
    return app_dir


def _module_name(relative: str) -> str:
    parts = relative[: -len(".py")].replace(os.sep, "/").split("/")
    if all(p.isidentifier() for p in parts):
        return ".".join(parts)
    return "_mlserve_entry_" + "".join(c if c.isalnum() else "_" for c in relative)


def import_class(app_dir: str, entrypoint: str) -> type:
    path, class_name = split_entrypoint(entrypoint)
    file = os.path.normpath(os.path.join(app_dir, path))
    if not os.path.isfile(file):
        raise EntrypointError(f"entrypoint file {file} does not exist (entrypoint {entrypoint!r}, app dir {app_dir})")
    name = _module_name(os.path.relpath(file, app_dir))
    if name in sys.modules and os.path.abspath(getattr(sys.modules[name], "__file__", "") or "") != file:
        name = "_mlserve_entry_" + name.replace(".", "_")
    if name.startswith("_mlserve_entry_"):
        spec = importlib.util.spec_from_file_location(name, file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(name)
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type):
        raise EntrypointError(f"{file} defines no class {class_name!r} (entrypoint {entrypoint!r})")
    return cls


def load_model(app_dir: str, entrypoint: str) -> Any:
    """Import, instantiate once, call ``load()`` once if defined; return the model."""
    model = import_class(app_dir, entrypoint)()
    load = getattr(model, "load", None)
    if callable(load):
        load()
    check_model(model)
    return model


def check_model(model: Any) -> None:
    predict = getattr(model, "predict", None)
    batch = getattr(model, "predict_batch", None)
    if not callable(predict) and not callable(batch):
        raise EntrypointError(f"{type(model).__name__} has neither predict(payload) nor predict_batch(payloads)")
    if callable(batch) and inspect.iscoroutinefunction(batch):
        raise EntrypointError(
            f"{type(model).__name__}.predict_batch must be a plain def (it runs in worker threads); "
            "use async def predict(payload) for async models"
        )
