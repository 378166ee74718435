"""The book's tooling: build the HTML book (:mod:`.build`) and check it in a browser (:mod:`.browser`).

``python -m cpmc_lib.book build [--quick]`` is what ``make book`` (``make book-quick``) calls. The
chapters themselves never import this package: it executes them.
"""

from __future__ import annotations

from .build import BookBuildError, build_book, execute_alone, execute_notebook, toc_files

__all__ = ["BookBuildError", "build_book", "execute_alone", "execute_notebook", "toc_files"]
