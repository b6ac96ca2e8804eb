"""What reaches clients when something fails: one stable code per error, no internals.

``ErrorCodes`` is the one place where GraphQL errors get their ``extensions.code``
(../shared/API.md). A ``GatewayError`` keeps its message and code; an unexpected exception is
logged once with its traceback and an error id, and the client sees only "Internal error" and
that id.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from graphql import GraphQLError, GraphQLSyntaxError
from graphql.pyutils import inspect
from strawberry.extensions import SchemaExtension

from gateway.errors import GatewayError

__all__ = ["ErrorCodes", "error_code", "format_errors"]

logger = logging.getLogger(__name__)

#: Seconds an overloaded server asks clients to wait before they retry.
RETRY_AFTER_SECONDS = 1


def error_code(error: GraphQLError, *, validation: bool = False) -> str:
    """The contract's code for ``error``."""
    original = error.original_error
    if isinstance(error, GraphQLSyntaxError) or isinstance(original, GraphQLSyntaxError):
        # graphql-core's max_tokens stops parsing with a syntax error: it is a query limit.
        return "QUERY_TOO_COMPLEX" if "more than" in error.message else "GRAPHQL_PARSE_FAILED"
    if validation:
        coded = (error.extensions or {}).get("code")  # the query limits rule codes its own
        return coded if coded == "QUERY_TOO_COMPLEX" else "GRAPHQL_VALIDATION_FAILED"
    if isinstance(original, GatewayError):
        return original.code
    if isinstance(original, GraphQLError) or (error.path is None and original is None):
        # graphql-core reports input that does not fit its type this way: variables before
        # execution (no path, the coercion's GraphQLError as the original or none), argument
        # values during it (e.g. a null variable where its default made the query valid).
        return "BAD_USER_INPUT"
    return "INTERNAL_SERVER_ERROR"


def format_errors(
    errors: Sequence[GraphQLError],
    *,
    validation: Sequence[GraphQLError] = (),
    response: Any = None,
    variables: Mapping[str, Any] | None = None,
) -> list[GraphQLError]:
    """Every error with its ``extensions.code``, unexpected ones masked (and logged with an
    id); an OVERLOADED error turns ``response`` (when given) into a 503 with Retry-After.
    A variable's value that does not fit its type is quoted as the JSON the client sent
    (``variables``: the request's)."""
    formatted = [
        e
        if _formatted(e)
        else _format(e, validation=any(e is v for v in validation), variables=variables)
        for e in errors
    ]
    if response is not None and any(
        (e.extensions or {}).get("code") == "OVERLOADED" for e in formatted
    ):
        # Shedding load: tell HTTP clients and proxies to come back (GraphQL over HTTP).
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return formatted


class ErrorCodes(SchemaExtension):
    """Sets ``extensions.code`` on every error and masks unexpected ones."""

    _validation_errors: list[GraphQLError]

    def on_validate(self) -> Iterator[None]:
        yield
        self._validation_errors = list(self.execution_context.pre_execution_errors or ())

    def on_stream_result(self, result: Any) -> Iterator[None]:
        # A query or mutation over a websocket: Strawberry sends its result before
        # on_operation resumes (and skips process_errors for it), so it is coded here.
        errors = getattr(result, "errors", None)
        if errors:
            result.errors = format_errors(errors, validation=self._validation_errors)
        yield

    def on_operation(self) -> Iterator[None]:
        self._validation_errors = []
        yield
        result = self.execution_context.result
        if result is None or not result.errors:
            return
        response = getattr(self.execution_context.context, "response", None)
        result.errors = format_errors(
            result.errors,
            validation=self._validation_errors,
            response=response,
            variables=self.execution_context.variables,
        )


def _formatted(error: GraphQLError) -> bool:
    # Formatted already (a result both streamed and seen by on_operation): formatting is
    # applied once, so an error is never masked or logged twice.
    return error.original_error is None and "code" in (error.extensions or {})


def _format(
    error: GraphQLError, *, validation: bool, variables: Mapping[str, Any] | None
) -> GraphQLError:
    code = error_code(error, validation=validation)
    original = error.original_error
    extensions = dict(error.extensions or {})
    message = error.message
    if code == "BAD_USER_INPUT" and variables:
        message = quote_as_json(message, variables)
    if code == "INTERNAL_SERVER_ERROR" and not (
        isinstance(original, GatewayError) and original.public
    ):
        error_id = uuid.uuid4().hex[:16]
        logger.error(
            "internal error %s in %s",
            error_id,
            ".".join(str(p) for p in error.path or ()) or "operation",
            exc_info=original or error,
            extra={"error_id": error_id},
        )
        message = f"Internal error (error id {error_id})"
        extensions["errorId"] = error_id
    extensions["code"] = code
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=None,
        extensions=extensions,
    )


# graphql-core's words for a variable value that does not fit its type: the variable, the path
# to the value inside it (print_path_list: ".field" and "[index]"), then the reason, which
# quotes the value with graphql.pyutils.inspect (Python's repr: None, True, {'a': 1}).
_NAME = r"[_A-Za-z][_0-9A-Za-z]*"
_INVALID_VARIABLE = re.compile(
    rf"Variable '\$(?P<name>{_NAME})' has invalid value(?: at (?P<path>(?:\.{_NAME}|\[\d+\])+))?: "
)
_PATH_KEY = re.compile(rf"\.({_NAME})|\[(\d+)\]")
_NOT_NULL = " not to be None."


def quote_as_json(message: str, variables: Mapping[str, Any]) -> str:
    """``message``, with the variable value it quotes the Python way (``None``, ``True``,
    ``{'a': 1}``) quoted as the JSON the client sent (``null``, ``true``, ``{"a": 1}``); the
    message unchanged when it is not such an error."""
    match = _INVALID_VARIABLE.match(message)
    if match is None or match["name"] not in variables:
        return message
    value: Any = variables[match["name"]]
    for field, index in _PATH_KEY.findall(match["path"] or ""):
        try:
            value = value[field] if field else value[int(index)]
        except (KeyError, IndexError, TypeError):
            return message
    head, reason = message[: match.end()], message[match.end() :]
    if value is None and reason.endswith(_NOT_NULL):
        return f"{head}{reason[: -len(_NOT_NULL)]} not to be null."
    python = inspect(value)
    at = reason.rfind(python)
    if at < 0:
        return message
    return f"{head}{reason[:at]}{_json(value)}{reason[at + len(python) :]}"


def _json(value: Any, depth: int = 0) -> str:
    """``value`` as JSON, cut where graphql-core's inspect cuts (long strings and lists, deep
    nesting), so that a message stays short whatever was sent."""
    if isinstance(value, str):
        return json.dumps(value if len(value) <= 240 else value[:237] + "...", ensure_ascii=False)
    if isinstance(value, list | dict) and value and depth >= 2:
        return "[...]" if isinstance(value, list) else "{...}"
    if isinstance(value, list):
        items = [_json(v, depth + 1) for v in value[:10]]
        return "[" + ", ".join(items + (["..."] if len(value) > 10 else [])) + "]"
    if isinstance(value, dict):
        pairs = [
            f"{json.dumps(str(k))}: {_json(v, depth + 1)}" for k, v in list(value.items())[:10]
        ]
        return "{" + ", ".join(pairs + (["..."] if len(value) > 10 else [])) + "}"
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return inspect(value)
