"""cpmc_lib: the library behind the CPMC notebook book.

Chapters start with ``import cpmc_lib as cl`` and call ``cl.<module>.<function>``, so a reader
always sees which names come from the library. Submodules load on first use, which keeps
``python -m cpmc_lib --help`` quick.
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import Any

__version__ = "0.1.0"

# Names re-exported at the top level: name -> submodule.
_EXPORTS = {
    "Config": "config",
    "ConfigError": "config",
    "load_config": "config",
    "save_config": "config",
    "RunStore": "store",
    "setup": "pipeline",
    "pick_device": "runtime",
    "seed_everything": "runtime",
}

_SUBMODULES = tuple(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))

__all__ = [*_SUBMODULES, *_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module 'cpmc_lib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
