"""Baseline servers for the benchmark: the same models behind less machinery.

* ``bare``: Starlette + ONNX Runtime, JSON ``POST /predict`` (iris) and ``POST /run/{model}``
  (any model with one numeric input, e.g. the ``dense`` MLP); the floor for any HTTP server.
* ``minimal_strawberry``: the smallest Strawberry schema answering the gateway's own iris query.

They load the version the gateway serves by default (the highest one), with the session options
the gateway uses by default, and run ``session.run`` on a thread pool as the gateway does (never
on the event loop), one run per request. Each is one uvicorn worker with uvicorn's defaults.
"""
