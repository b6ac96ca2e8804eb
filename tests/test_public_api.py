"""The package's public surface is declared in __all__ and nothing else is public."""

from __future__ import annotations
import __future__

import types

import gateway


def test_all_lists_exactly_the_public_names() -> None:
    public = {
        name
        for name, value in vars(gateway).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType | __future__._Feature)
    }
    assert set(gateway.__all__) == public | {"__version__"}


def test_version() -> None:
    assert gateway.__version__.count(".") == 2
