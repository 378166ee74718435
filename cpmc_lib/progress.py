"""Progress bars: live in a terminal or JupyterLab, one plain line of text in the published book.

``tqdm.auto`` draws an ipywidgets bar inside any Jupyter kernel, and papermill saves it as a widget
output: the HTML book would then load require.js and the widget manager from a CDN to show it. The
book build (:mod:`cpmc_lib.book`) sets :data:`PLAIN_ENV` for the kernels it starts; there
:func:`tqdm` is ``tqdm.std.tqdm`` writing to standard output through :class:`FinalLine`, which
keeps only the bar's last state: one line of text per finished bar, no widget, no carriage returns.

Example:
    >>> from cpmc_lib.progress import tqdm
    >>> for _ in tqdm(range(3), desc="demo", disable=True):
    ...     pass
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any

__all__ = ["PLAIN_ENV", "FinalLine", "plain_progress", "tqdm"]

PLAIN_ENV = "CPMC_PLAIN_PROGRESS"


def plain_progress() -> bool:
    """True when progress must be plain text (:data:`PLAIN_ENV` set to anything but ``""``/``"0"``)."""
    return os.environ.get(PLAIN_ENV, "") not in ("", "0")


class FinalLine:
    """A text stream for tqdm that writes only the last state of each line (the text after its last ``\\r``).

    tqdm redraws a bar with ``\\r``; a finished bar (``leave=True``) ends with ``\\n``, which
    flushes its final state as one line; a bar that clears itself (``leave=False``) writes nothing.
    """

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self._line = ""

    def write(self, text: str) -> int:
        *done, self._line = (self._line + text).split("\n")
        for line in done:
            last = line.split("\r")[-1].rstrip()
            if last:
                self.stream.write(last + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def tqdm(*args: Any, **kwargs: Any):
    """``tqdm.auto.tqdm``, or in the book build (:func:`plain_progress`) a plain-text ``tqdm.std.tqdm``."""
    if plain_progress():
        from tqdm.std import tqdm as plain

        kwargs.setdefault("file", FinalLine(sys.stdout))
        kwargs.setdefault("ascii", True)
        kwargs.setdefault("ncols", 80)
        return plain(*args, **kwargs)
    from tqdm.auto import tqdm as auto

    return auto(*args, **kwargs)
