"""The live parts of one application: settings, runtime, telemetry and the current schema."""

from __future__ import annotations

import logging

from gateway.api import GatewaySchema, build_schema
from gateway.api.observe import OperationObserver
from gateway.config import Settings
from gateway.runtime import ModelRuntime
from gateway.security import ErrorCodes
from gateway.telemetry import Telemetry

__all__ = ["SCHEMA_EXTENSIONS", "Gateway"]

logger = logging.getLogger("gateway.app")

#: The schema extensions, outermost first: the observer sees errors after ErrorCodes coded them.
SCHEMA_EXTENSIONS = (OperationObserver, ErrorCodes)


class Gateway:
    """What the routes of one application share."""

    def __init__(self, settings: Settings, runtime: ModelRuntime) -> None:
        self.settings = settings
        self.runtime = runtime
        self.telemetry: Telemetry | None = None
        self.current: GatewaySchema = self._build()

    def _build(self) -> GatewaySchema:
        return build_schema(list(self.runtime.entries.values()), extensions=SCHEMA_EXTENSIONS)

    def rebuild(self) -> None:
        """Swap in a schema made from the versions' signatures as they are now."""
        self.current = self._build()
        for name, typed in sorted(self.current.typed.items()):
            if isinstance(typed, str):
                logger.warning(
                    "model %s has no typed field: %s", name, typed, extra={"model": name}
                )
