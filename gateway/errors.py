"""The gateway's exception tree.

Every class carries a stable ``code``; it reaches GraphQL clients as
``extensions.code`` and is part of the public contract (../shared/API.md).
Never rename one.

    GatewayError                      INTERNAL_SERVER_ERROR
    ├── ConfigError                   CONFIG_ERROR (operator input, never sent to clients)
    ├── ModelLoadError                MODEL_LOAD_FAILED (shown as a version's state reason)
    ├── BadRequestError               BAD_REQUEST (the HTTP request is not a GraphQL request)
    ├── ModelNotFoundError            MODEL_NOT_FOUND
    ├── ModelNotReadyError            MODEL_NOT_READY
    ├── InvalidInputError             BAD_USER_INPUT
    │   └── UnknownCategoryError      BAD_USER_INPUT (a value an encoder was not fitted on)
    ├── QueryTooComplexError          QUERY_TOO_COMPLEX
    ├── UnauthenticatedError          UNAUTHENTICATED
    ├── ForbiddenError                FORBIDDEN
    ├── RateLimitedError              RATE_LIMITED
    ├── OverloadedError               OVERLOADED
    ├── RequestTimeoutError           TIMEOUT (past request_timeout_seconds; HTTP 504)
    └── InferenceError                INTERNAL_SERVER_ERROR (ONNX Runtime failed on valid input)
"""

from __future__ import annotations

__all__ = [
    "BadRequestError",
    "ConfigError",
    "ForbiddenError",
    "GatewayError",
    "InferenceError",
    "InvalidInputError",
    "ModelLoadError",
    "ModelNotFoundError",
    "ModelNotReadyError",
    "OverloadedError",
    "QueryTooComplexError",
    "RateLimitedError",
    "RequestTimeoutError",
    "UnauthenticatedError",
    "UnknownCategoryError",
]


class GatewayError(Exception):
    """Base of every error the gateway raises on purpose."""

    code = "INTERNAL_SERVER_ERROR"
    #: Whether the message may be shown to a client as it is.
    public = True

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(GatewayError):
    """Bad operator input: a setting, a flag or a ``model.toml`` value."""

    code = "CONFIG_ERROR"


class ModelLoadError(GatewayError):
    """A model version could not be read, loaded or warmed up."""

    code = "MODEL_LOAD_FAILED"


class BadRequestError(GatewayError):
    """The HTTP request carries no GraphQL request: no JSON body, no query, a wrong method."""

    code = "BAD_REQUEST"


class ModelNotFoundError(GatewayError):
    """No model, or no such version, of that name."""

    code = "MODEL_NOT_FOUND"


class ModelNotReadyError(GatewayError):
    """The model exists but the requested version is not loaded."""

    code = "MODEL_NOT_READY"


class InvalidInputError(GatewayError):
    """The request's inputs do not fit the model's signature."""

    code = "BAD_USER_INPUT"


class UnknownCategoryError(InvalidInputError):
    """A categorical encoder of the model refused a value it was not fitted on."""

    def __init__(
        self, *, input: str, column: int | None, row: int, value: object, detail: str
    ) -> None:
        where = f'input "{input}", row {row}' + ("" if column is None else f", column {column}")
        super().__init__(f"{where}: {detail}")
        self.input = input
        self.column = column
        self.row = row
        self.value = value
        #: The message without the place, for callers that name the place in their own terms.
        self.detail = detail


class QueryTooComplexError(GatewayError):
    """The operation exceeds a configured limit."""

    code = "QUERY_TOO_COMPLEX"


class UnauthenticatedError(GatewayError):
    """No valid credentials."""

    code = "UNAUTHENTICATED"


class ForbiddenError(GatewayError):
    """Valid credentials without the right for this operation."""

    code = "FORBIDDEN"


class RateLimitedError(GatewayError):
    """The caller is over its rate."""

    code = "RATE_LIMITED"


class OverloadedError(GatewayError):
    """The server is shedding load."""

    code = "OVERLOADED"


class RequestTimeoutError(GatewayError):
    """The request ran longer than the server allows; its work was cancelled."""

    code = "TIMEOUT"


class InferenceError(GatewayError):
    """ONNX Runtime failed on input that passed validation: our fault, not the caller's."""

    code = "INTERNAL_SERVER_ERROR"
    public = False
