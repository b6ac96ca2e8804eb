"""Parsed and validated documents, cached per distinct operation text."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import ParserCache

__all__ = ["DocumentCache"]


class DocumentCache(ParserCache):
    """Strawberry's ParserCache, except that a syntax error is left to Strawberry's own parse.

    ParserCache raises from inside its hook, which skips the error handling of every other
    extension; here the document stays unset, Strawberry parses it again and reports the
    error the usual way (with its code). Valid documents, the ones that repeat, are cached.
    """

    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        with contextlib.suppress(GraphQLError):
            context.graphql_document = self.cached_parse_document(
                context.query, **context.parse_options
            )
        yield
