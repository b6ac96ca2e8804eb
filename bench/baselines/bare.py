"""Baseline: Starlette + ONNX Runtime, no GraphQL.

``POST /predict`` with ``{"inputs": [[5.1, 3.5, 1.4, 0.2], ...]}`` answers
``{"predictions": [{"label": "setosa", "probabilities": [{"label": ..., "probability": ...}]}]}``.
``GET /readyz`` answers 200 once the model is loaded (uvicorn accepts only after the lifespan).

Run: ``python -m bench.baselines.bare --models models --port 8001``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bench.baselines.common import load_iris, serve

__all__ = ["create_app", "main"]


def create_app(models: Path) -> Starlette:
    """The bare application over the iris model in ``models``."""
    model = load_iris(models)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            model.close()

    async def predict(request: Request) -> Response:
        try:
            payload = await request.json()
            rows = payload["inputs"]
            if not (isinstance(rows, list) and all(len(r) == 4 for r in rows)):
                raise ValueError("inputs must be a list of rows of 4 numbers")
        except (ValueError, KeyError, TypeError) as exc:
            return JSONResponse({"errors": [str(exc)]}, status_code=400)
        predictions = await model.predict(rows)
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

    async def readyz(request: Request) -> Response:
        return JSONResponse({"status": "ready"})

    routes = [
        Route("/predict", predict, methods=["POST"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the bare baseline."""
    serve(create_app, argv, prog="bench.baselines.bare")


if __name__ == "__main__":
    main()
