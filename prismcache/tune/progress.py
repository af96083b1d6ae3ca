"""A one-line progress bar with an estimate of time left, written to a text stream (stderr).

>>> import io
>>> out = io.StringIO()
>>> bar = Progress("embedding", 4, stream=out, clock=iter([0.0, 1.0, 2.0]).__next__)
>>> bar.update(2)
>>> out.getvalue().split("\\r")[-1]
'embedding [##########          ] 2/4  50%  1.0s elapsed, ~1.0s left'
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

__all__ = ["Progress", "duration"]

_WIDTH = 20


def duration(seconds: float) -> str:
    """``seconds`` as ``"4.2s"``, ``"3m05s"`` or ``"1h02m"``."""
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes = int(seconds // 60)
    if minutes < 60:
        return f"{minutes}m{int(seconds % 60):02d}s"
    return f"{minutes // 60}h{minutes % 60:02d}m"


class Progress:
    """Progress of ``total`` units of work: :meth:`update` redraws the line (at most every
    ``every`` seconds, and always at the end); :meth:`close` ends it with a newline."""

    def __init__(self, label: str, total: int, *, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic, every: float = 0.0) -> None:
        self.label, self.total = label, max(int(total), 1)
        self._stream = sys.stderr if stream is None else stream
        self._clock, self._every = clock, every
        self._started = clock()
        self._shown = float("-inf")
        self.extra = ""

    def update(self, done: int, extra: str = "") -> None:
        """Show ``done`` of ``total`` units, with ``extra`` (e.g. the loss) after the bar."""
        now = self._clock()
        if now - self._shown < self._every and done < self.total:
            return
        self._shown = now
        elapsed = now - self._started
        share = min(done / self.total, 1.0)
        left = elapsed * (1 - share) / share if share > 0 else float("nan")
        bar = "#" * round(_WIDTH * share)
        eta = duration(left) if left == left else "?"
        width = len(str(self.total))
        line = (f"{self.label} [{bar:<{_WIDTH}}] {done:>{width}}/{self.total} {share:4.0%}  "
                f"{duration(elapsed)} elapsed, ~{eta} left{extra}")
        self._stream.write("\r" + line)
        self._stream.flush()

    def close(self) -> None:
        """End the line."""
        self._stream.write("\n")
        self._stream.flush()
