"""The prediction gateway: serve ONNX models as a typed GraphQL API."""

from __future__ import annotations

__version__ = "0.1.0"

# Public names; everything else is internal. (Defined after __version__: modules read it.)
from gateway.api import GatewaySchema, build_schema
from gateway.app import create_app
from gateway.config import Settings
from gateway.errors import GatewayError
from gateway.repository import scan_repository
from gateway.runtime import ModelRuntime

__all__ = [
    "GatewayError",
    "GatewaySchema",
    "ModelRuntime",
    "Settings",
    "__version__",
    "build_schema",
    "create_app",
    "scan_repository",
]
