"""The gateway's benchmark harness: ``python bench/run.py`` (see bench/README.md).

Speed goals live here as ratios against baselines measured in the same run on the same machine;
``bench.runner``'s docstring describes the method.
"""

from __future__ import annotations
