"""Baseline: the smallest Strawberry schema that answers the gateway's typed iris query.

``{ predict { iris(input: {...}) { label probabilities { label probability } } } }`` is valid
here exactly as it is against the gateway, so both take the same request body. No error masking,
no model registry, no validation beyond GraphQL's own: what is left is Strawberry's cost.

Run: ``python -m bench.baselines.minimal_strawberry --models models --port 8002``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import strawberry
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from strawberry.asgi import GraphQL

from bench.baselines.common import IrisModel, load_iris, serve

__all__ = ["create_app", "main"]


@strawberry.input
class IrisInput:
    sepal_length: float
    sepal_width: float
    petal_length: float
    petal_width: float


@strawberry.type
class ClassProbability:
    label: str
    probability: float


@strawberry.type
class IrisPrediction:
    label: str
    probabilities: list[ClassProbability]


@strawberry.type
class Predict:
    @strawberry.field
    async def iris(self, info: strawberry.Info, input: IrisInput) -> IrisPrediction:
        model: IrisModel = info.context["request"].app.state.model
        row = [input.sepal_length, input.sepal_width, input.petal_length, input.petal_width]
        (p,) = await model.predict([row])
        probs = [ClassProbability(label=label, probability=v) for label, v in p.probabilities]
        return IrisPrediction(label=p.label, probabilities=probs)


@strawberry.type
class Query:
    @strawberry.field
    def predict(self) -> Predict:
        return Predict()


SCHEMA = strawberry.Schema(query=Query)


def create_app(models: Path) -> Starlette:
    """The minimal Strawberry application over the iris model in ``models``."""
    model = load_iris(models)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            model.close()

    async def readyz(request: Request) -> Response:
        return JSONResponse({"status": "ready"})

    routes = [
        Route("/graphql", GraphQL[None, None](SCHEMA), methods=["GET", "POST"]),
        Route("/readyz", readyz, methods=["GET"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.model = model
    return app


def main(argv: Sequence[str] | None = None) -> None:
    """Serve the minimal Strawberry baseline."""
    serve(create_app, argv, prog="bench.baselines.minimal_strawberry")


if __name__ == "__main__":
    main()
