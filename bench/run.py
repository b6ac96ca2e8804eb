"""Benchmark the gateway against baselines: ``python bench/run.py [--scenario NAME ...]
[--duration S] [--connections C] [--json OUT]``; ``--help`` lists every option.

A script rather than only ``python -m bench``, so that it runs from anywhere: it puts the
repository root on ``sys.path`` in place of ``bench/`` (whose module names must not shadow
others') and hands over to ``bench.cli``.
"""

from __future__ import annotations

import sys
from pathlib import Path

if __name__ == "__main__":
    sys.path[0] = str(Path(__file__).resolve().parent.parent)
    from bench.cli import main

    raise SystemExit(main())
