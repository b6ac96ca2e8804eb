"""The application in-process: lifespan, background load, readiness, schema swap, GraphiQL."""

from __future__ import annotations

import asyncio
import hashlib
from pathlib import Path

import httpx

from gateway.app import create_app
from gateway.config import Settings
from tests.conftest import EXAMPLE_MODELS, identity_model, write_repository

IRIS = (
    "{ predict { iris(input: {sepalLength: 5.1, sepalWidth: 3.5, petalLength: 1.4, "
    "petalWidth: 0.2}) { label } } }"
)


def _settings(models: Path) -> Settings:
    return Settings.load(environ={"GATEWAY_MODELS": str(models)})


async def _until_ready(client: httpx.AsyncClient) -> httpx.Response:
    for _ in range(3000):  # up to 30 s on a busy machine
        response = await client.get("/readyz")
        if response.json()["status"] != "loading":
            return response
        await asyncio.sleep(0.01)
    raise AssertionError("still loading after 30 s")


def test_not_ready_while_loading_then_ready_with_the_typed_schema() -> None:
    app = create_app(_settings(EXAMPLE_MODELS))

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
            # No lifespan yet: nothing has loaded.
            loading = await client.get("/readyz")
            assert loading.status_code == 503 and loading.json() == {"status": "loading"}
            assert (await client.get("/healthz")).status_code == 200
            before = await client.post("/graphql", json={"query": IRIS})
            assert before.json()["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
            async with app.router.lifespan_context(app):
                ready = await _until_ready(client)
                assert ready.status_code == 200
                after = await client.post("/graphql", json={"query": IRIS})
                body = after.json()
                assert body["data"] == {"predict": {"iris": {"label": "setosa"}}}
                # No exporter and no trace viewer: nothing would read the trace, none is sampled.
                assert "traceId" not in body.get("extensions", {})
                models = await client.post(
                    "/graphql", json={"query": "{ models { name versions { state } } }"}
                )
                states = {m["name"]: m["versions"] for m in models.json()["data"]["models"]}
                assert states["iris"] == [{"state": "READY"}, {"state": "READY"}]
            after_close = await client.post(
                "/graphql", json={"query": '{ model(name: "iris") { versions { state } } }'}
            )
            versions = after_close.json()["data"]["model"]["versions"]
            assert {v["state"] for v in versions} == {"UNAVAILABLE"}

    asyncio.run(scenario())


def test_graphiql_page_and_static_assets(tmp_path: Path) -> None:
    app = create_app(_settings(write_repository(tmp_path, {"ident/1": identity_model()})))

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://localhost") as client,
            app.router.lifespan_context(app),
        ):
            await _until_ready(client)
            page = await client.get("/graphql", headers={"accept": "text/html"})
            assert page.status_code == 200
            assert "query PredictIdent" in page.text
            assert 'src="/graphiql/static/graphiql.min.js' in page.text
            asset = await client.get("/graphiql/static/boot.js")
            assert asset.status_code == 200 and "GraphiQL" in asset.text
            get_query = await client.get("/graphql", params={"query": "{ models { name } }"})
            assert get_query.json()["data"] == {"models": [{"name": "ident"}]}

    asyncio.run(scenario())


def test_graphql_posts_in_process_fast_and_fallback(tmp_path: Path) -> None:
    app = create_app(_settings(EXAMPLE_MODELS))
    introspection = "{ __schema { queryType { name } } }"
    digest = hashlib.sha256(introspection.encode()).hexdigest()
    ext = {"persistedQuery": {"version": 1, "sha256Hash": digest}}

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with (
            httpx.AsyncClient(transport=transport, base_url="http://localhost") as client,
            app.router.lifespan_context(app),
        ):
            await _until_ready(client)
            fast = await client.post("/graphql", json={"query": IRIS})
            assert fast.json()["data"] == {"predict": {"iris": {"label": "setosa"}}}
            # Introspection runs on Strawberry, also when it comes as a persisted query.
            stored = await client.post("/graphql", json={"query": introspection, "extensions": ext})
            again = await client.post("/graphql", json={"extensions": ext})
            assert stored.json()["data"] == again.json()["data"]
            assert again.json()["data"]["__schema"]["queryType"]["name"] == "Query"
            broken = await client.post(
                "/graphql", content=b"{", headers={"content-type": "application/json"}
            )
            assert broken.status_code == 400
            assert broken.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
            batch = await client.post("/graphql", json=[{"query": IRIS}])
            assert batch.status_code == 400  # batched operations: not enabled (yet)
            assert batch.json()["errors"][0]["extensions"]["code"] == "BAD_REQUEST"
            text = await client.post(
                "/graphql", content=IRIS, headers={"content-type": "application/graphql"}
            )
            assert text.status_code == 415  # GraphQL over HTTP: Unsupported Media Type
            (error,) = text.json()["errors"]
            assert error["extensions"]["code"] == "BAD_REQUEST"
            assert "unsupported content type 'application/graphql'" in error["message"]

    asyncio.run(scenario())
