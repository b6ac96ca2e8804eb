"""The GraphQL API: generic tensors, model metadata and the typed per-model fields."""

from __future__ import annotations

from gateway.api.context import GatewayContext
from gateway.api.schema import GatewaySchema, build_schema, build_typed_models

__all__ = ["GatewayContext", "GatewaySchema", "build_schema", "build_typed_models"]
