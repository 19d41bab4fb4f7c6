"""The model server every mlserve bundle runs: ``python -m mlserve.runtime``.

It loads one user class (``load()`` once, ``predict(payload)`` per request, optionally
``predict_batch(payloads)`` or ``async def predict``) and answers mlserve's, SageMaker's,
Vertex AI's, Azure ML's and KServe v1's routes on one port.

This package is copied verbatim into container build contexts, so it imports only the standard
library, uvicorn (with uvloop and httptools when installed) and its own modules — never another
``mlserve`` module. A test enforces it.

Modules: ``config`` (flags and environment), ``loader`` (import and load the model), ``app`` (the
ASGI routes), ``dispatch`` (running predict off the loop), ``logs`` (access log and events),
``masking`` (secrets masked in whatever the process writes), ``engines`` (which event loop and
HTTP parser it runs, and why not the fast ones), ``server`` (uvicorn, sockets,
handover, signals).
"""
