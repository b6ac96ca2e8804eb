"""GraphQL names derived from model, feature and tensor names.

Words are the runs of ASCII letters and digits (camelCase humps split too); Strawberry's own
converter turns them into camelCase. A name that starts with a digit gets a role prefix
(``output 23`` -> ``output23``); a name with no ASCII letter or digit cannot be derived.
"""

from __future__ import annotations

import re

from strawberry.utils.str_converters import capitalize_first, to_camel_case, to_snake_case

__all__ = ["field_name", "type_name"]

_WORD = re.compile(r"[A-Za-z0-9]+")


def field_name(raw: str, *, role: str) -> str | None:
    """The camelCase GraphQL field name for ``raw``, or None when none can be derived.

    Args:
        raw: the model, feature or tensor name.
        role: the prefix for names that start with a digit ("input", "output", "feature").
    """
    words = [w for part in _WORD.findall(raw) for w in to_snake_case(part).split("_") if w]
    if not words:
        return None
    if words[0][0].isdigit():
        words.insert(0, role)
    return to_camel_case("_".join(w.lower() for w in words))


def type_name(raw: str) -> str | None:
    """The PascalCase GraphQL type name stem for a model called ``raw``."""
    name = field_name(raw, role="model")
    return None if name is None else capitalize_first(name)
