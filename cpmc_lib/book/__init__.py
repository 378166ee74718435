"""The book's tooling: build the HTML book (:mod:`.build`) and check it in a browser (:mod:`.browser`).

``python -m cpmc_lib.book build [--quick]`` is what ``make book`` (``make book-quick``) calls. The
chapters themselves never import this package: it executes them.
"""

from __future__ import annotations

from .build import build_book, execute_notebook, toc_files

__all__ = ["build_book", "execute_notebook", "toc_files"]
