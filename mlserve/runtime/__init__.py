"""The model server every mlserve bundle runs: ``python -m mlserve.runtime``.

It loads one user class (``load()`` once, ``predict(payload)`` per request, optionally
``predict_batch(payloads)`` or ``async def predict``) and answers mlserve's, SageMaker's,
Vertex AI's, Azure ML's and KServe v1's routes on one port.

This package is copied verbatim into container build contexts, so it imports only the standard
library, uvicorn (with uvloop and httptools when installed) and its own modules — never another
``mlserve`` module. A test enforces it.

Modules: ``config`` (flags and environment), ``loader`` (import and load the model), ``app`` (the
routes, transport-neutral, with an ASGI entry), ``http11`` (the HTTP/1.1 protocol on httptools
that calls them), ``dispatch`` and ``batching`` (running predict and predict_batch off the loop),
``metrics`` (batching histograms), ``logs`` (access log and events), ``masking`` (secrets masked in
whatever the process writes), ``engines`` (which event loop and HTTP parser it runs, and why not
the fast ones), ``server`` (uvicorn's server, sockets, handover, signals).
"""
