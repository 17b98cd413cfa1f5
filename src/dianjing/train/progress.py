"""A progress line with loss, tokens/s and ETA: a live bar on a terminal, plain lines elsewhere."""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, start: int = 0, stream=None, quiet: bool = False):
        """quiet: show nothing (the processes other than rank 0 under torchrun)."""
        self.total, self.start = total, start
        self.stream = Silent() if quiet else (stream or sys.stderr)
        self.live = self.stream.isatty()
        self.t0 = time.perf_counter()
        self.last_plain = 0.0

    def update(self, step: int, loss: float, tokens_per_s: float) -> None:
        done = step - self.start
        spent = time.perf_counter() - self.t0
        eta = spent / done * (self.total - step) if done else 0.0
        width = 24
        fill = int(width * step / self.total)
        line = (f"[{'#' * fill}{'.' * (width - fill)}] step {step}/{self.total}  loss {loss:.4f}  "
                f"{tokens_per_s:,.0f} tok/s  eta {_hms(eta)}")
        if self.live:
            self.stream.write("\r" + line + " " * 4)
            self.stream.flush()
        elif time.perf_counter() - self.last_plain > 10 or step == self.total:
            self.last_plain = time.perf_counter()
            self.stream.write(line + "\n")
            self.stream.flush()

    def note(self, text: str) -> None:
        self.stream.write(("\n" if self.live else "") + text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.live:
            self.stream.write("\n")
            self.stream.flush()


class Silent:
    """A stream that writes nowhere (the processes other than rank 0)."""

    def write(self, _text: str) -> None:
        pass

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False


def _hms(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"
