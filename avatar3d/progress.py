"""Progress bars that suit where stderr goes: a live tqdm bar on a terminal, a few plain lines in a log.

tqdm redraws its bar many times a second; written to a file or a pipe each redraw becomes a line of its own,
and an enrollment log grew to thousands of them. When stderr is not a terminal, `progress_bar` returns a
`LogProgress` instead: one line when a stage starts, one at every 10 % (and at least every minute), one when
it ends, with the rate. Both have tqdm's interface as far as this project uses it (update, set_postfix,
set_postfix_str, close, context manager). Every update also lets `avatar3d.runtime.adapt_threads` follow
the machine's load (a cheap clock check; it looks at the load every few seconds).
"""
from __future__ import annotations

import sys
import time
from typing import Optional, TextIO

from avatar3d.runtime import adapt_threads

LOG_STEP = 0.1  # fraction of the total between two log lines
LOG_INTERVAL = 60.0  # seconds: a line at least this often, however slow the stage


def _is_terminal(stream) -> bool:
    try:
        return bool(stream.isatty())
    except Exception:  # a closed or unusual stream
        return False


class LogProgress:
    """tqdm's interface, printing a start line, a line per LOG_STEP of the total and an end line."""

    def __init__(self, total: Optional[int], desc: str = "", unit: str = "it", initial: int = 0,
                 file: Optional[TextIO] = None, disable: bool = False):
        self.total, self.desc, self.unit = total, desc, unit
        self.n = int(initial)
        self.file = file or sys.stderr
        self.disable = disable
        self._postfix = ""
        self._start = time.monotonic()
        self._start_n = self.n
        self._last_line = self._start
        self._next_fraction = self._fraction() + LOG_STEP
        self._closed = False
        what = f"{total} {unit}" if total else unit
        self._line(f"started ({what}" + (f", from {initial}" if initial else "") + ")")

    def _fraction(self) -> float:
        return self.n / self.total if self.total else 0.0

    def _line(self, text: str) -> None:
        if self.disable:
            return
        print(f"{self.desc}: {text}" if self.desc else text, file=self.file, flush=True)
        self._last_line = time.monotonic()

    def _rate(self) -> str:
        elapsed = max(time.monotonic() - self._start, 1e-9)
        return f"{(self.n - self._start_n) / elapsed:.2f} {self.unit}/s"

    def update(self, n: int = 1) -> None:
        adapt_threads()
        self.n += int(n)
        now = time.monotonic()
        if self.total and self._fraction() >= self._next_fraction - 1e-9 and self.n < self.total:
            while self._next_fraction <= self._fraction() + 1e-9:
                self._next_fraction += LOG_STEP
            self._progress_line()
        elif now - self._last_line >= LOG_INTERVAL:
            self._progress_line()

    def _progress_line(self) -> None:
        where = f"{self.n}/{self.total} {self.unit} ({100 * self._fraction():.0f} %)" if self.total \
            else f"{self.n} {self.unit}"
        self._line(f"{where}, {self._rate()}" + (f", {self._postfix}" if self._postfix else ""))

    def set_postfix(self, ordered_dict=None, refresh: bool = True, **kwargs) -> None:
        items = dict(ordered_dict or {}, **kwargs)
        self._postfix = ", ".join(f"{k}={v}" for k, v in items.items())

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        self._postfix = str(s)

    def write(self, text: str) -> None:
        if not self.disable:
            print(text, file=self.file, flush=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        elapsed = time.monotonic() - self._start
        self._line(f"done, {self.n} {self.unit} in {elapsed:.1f} s ({self._rate()})"
                   + (f", {self._postfix}" if self._postfix else ""))

    def __enter__(self) -> "LogProgress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def progress_bar(total: Optional[int], desc: str, unit: str = "it", initial: int = 0, disable: bool = False,
                 file: Optional[TextIO] = None, **tqdm_kwargs):
    """A tqdm bar on a terminal, a `LogProgress` (a few plain lines) anywhere else."""
    stream = file or sys.stderr
    if _is_terminal(stream):
        return _terminal_bar()(total=total, desc=desc, unit=unit, initial=initial, disable=disable, file=stream,
                               **tqdm_kwargs)
    return LogProgress(total, desc=desc, unit=unit, initial=initial, file=stream, disable=disable)


def _terminal_bar():
    from tqdm.auto import tqdm

    class TerminalBar(tqdm):
        def update(self, n=1):
            adapt_threads()
            return super().update(n)

    return TerminalBar
