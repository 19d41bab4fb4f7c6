"""mlserve: write a model once, deploy it to any layer of the serving stack.

Importing this package is cheap on purpose: it pulls in no pydantic, Jinja or cloud SDK.
"""

__version__ = "0.1.0"
