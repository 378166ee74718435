"""Compare two pipeline ``metrics.json`` files result by result: what a refactoring must leave equal.

Every scalar leaf is compared (timings, peak memory, the resolved config and its hash left out);
NaN equals NaN. Prints how many values were compared and each one that differs, added or removed.
Exit status 1 when any differs.

Usage::

    python benchmarks/compare_metrics.py before/runs/default/metrics.json runs/default/metrics.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from typing import Any

SKIP = ("seconds", "stage_seconds", "peak_rss_mb", "config", "config_hash")


def results(metrics: dict[str, Any]) -> dict[str, Any]:
    """The scalar results of a metrics.json by dotted path (list items by index: the learning curves,
    the per-class IoUs), without timings, memory and config."""
    out: dict[str, Any] = {}

    def walk(x: Any, path: str) -> None:
        if isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{path}.{k}" if path else str(k))
        elif isinstance(x, list):
            for i, v in enumerate(x):
                walk(v, f"{path}.{i}")
        else:
            out[path] = x

    walk({k: v for k, v in metrics.items() if k not in SKIP}, "")
    return out


def differences(a: dict[str, Any], b: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """``(path, value in a, value in b)`` for every result that differs (``"<absent>"`` where missing)."""
    ra, rb = results(a), results(b)
    out = []
    for key in sorted(set(ra) | set(rb)):
        x, y = ra.get(key, "<absent>"), rb.get(key, "<absent>")
        nan = isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)
        if x != y and not nan:
            out.append((key, x, y))
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("before")
    ap.add_argument("after")
    args = ap.parse_args()
    a, b = (json.load(open(p)) for p in (args.before, args.after))
    diffs = differences(a, b)
    print(f"{len(results(a))} result values compared; {len(diffs)} differ")
    for key, x, y in diffs:
        print(f"{key}: {x} -> {y}")
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main())
