"""Baseline servers for the benchmark: the same iris model behind less machinery.

* ``bare``: Starlette + ONNX Runtime, a JSON ``POST /predict``; the floor for any HTTP server.
* ``minimal_strawberry``: the smallest Strawberry schema answering the gateway's own iris query.

Both load the iris version the gateway serves by default (the highest one), with the session
options the gateway uses by default, and run ``session.run`` on a thread pool as the gateway
does (never on the event loop). Each is one uvicorn worker with uvicorn's defaults.
"""
