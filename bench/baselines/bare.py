"""Baseline: Starlette + ONNX Runtime, no GraphQL.

* ``POST /predict`` with ``{"inputs": [[5.1, 3.5, 1.4, 0.2], ...]}`` (any number of rows)
  answers ``{"predictions": [{"label": "setosa", "probabilities": [{"label": ...,
  "probability": ...}]}]}``, over the highest version of ``models/iris`` (404 without one).
* ``POST /run/{model}`` with ``{"inputs": [[...], ...]}``: the rows as the one numeric input of
  any model of the repository (highest version), every output back as nested lists:
  ``{"outputs": {"y": [[...], ...]}}``. The session is made on the model's first request.
* ``GET /readyz`` answers 200 once iris is loaded (uvicorn accepts only after the lifespan).

Each request is its own ``session.run`` on the worker pool: no batching across requests.

Run: ``python -m bench.baselines.bare --models models --port 8001``.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench.baselines.common import (
    MODEL_NAME,
    TensorModel,
    highest_version,
    load_iris,
    serve,
    usable_cores,
)

__all__ = ["create_app", "main"]

_MODEL_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_-]*")  # as the gateway's repository scan


def create_app(models: Path) -> Starlette:
    """The bare application over the model repository ``models``."""
    iris = load_iris(models) if (models / MODEL_NAME).is_dir() else None
    # As many workers as the gateway's default GATEWAY_INFERENCE_THREADS (usable cores).
    executor = ThreadPoolExecutor(max_workers=usable_cores())
    tensor_models: dict[str, TensorModel] = {}
    loading = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            if iris is not None:
                iris.close()
            executor.shutdown(wait=False, cancel_futures=True)

    async def predict(request: Request) -> Response:
        if iris is None:
            return JSONResponse({"errors": [f"no {MODEL_NAME} model"]}, status_code=404)
        try:
            payload = await request.json()
            rows = payload["inputs"]
            if not (isinstance(rows, list) and all(len(r) == 4 for r in rows)):
                raise ValueError("inputs must be a list of rows of 4 numbers")
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"errors": [str(exc)]}, status_code=400)
        predictions = await iris.predict(rows)
        return JSONResponse(
            {
                "predictions": [
                    {
                        "label": p.label,
                        "probabilities": [
                            {"label": label, "probability": prob} for label, prob in p.probabilities
                        ],
                    }
                    for p in predictions
                ]
            }
        )

    async def tensor_model(name: str) -> TensorModel | None:
        model = tensor_models.get(name)
        if model is not None:
            return model
        async with loading:
            if name not in tensor_models:
                root = models / name
                if not (_MODEL_NAME.fullmatch(name) and root.is_dir()):
                    return None
                loop = asyncio.get_running_loop()
                path = highest_version(root)
                tensor_models[name] = await loop.run_in_executor(
                    executor, TensorModel, path, executor
                )
            return tensor_models[name]

    async def run(request: Request) -> Response:
        try:
            model = await tensor_model(request.path_params["model"])
        except (FileNotFoundError, ValueError) as exc:
            return JSONResponse({"errors": [str(exc)]}, status_code=400)
        if model is None:
            return JSONResponse({"errors": ["no such model"]}, status_code=404)
        try:
            payload = await request.json()
            array = model.check(payload["inputs"])
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"errors": [str(exc)]}, status_code=400)
        return JSONResponse({"outputs": await model.run(array)})

    async def readyz(request: Request) -> Response:
        return JSONResponse({"status": "ready"})

    routes = [
        Route("/predict", predict, methods=["POST"]),
        Route("/run/{model}", run, methods=["POST"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the bare baseline."""
    serve(create_app, argv, prog="bench.baselines.bare")


if __name__ == "__main__":
    main()
