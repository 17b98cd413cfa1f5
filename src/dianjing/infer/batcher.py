"""The generation engine behind `dianjing serve`: the models in memory and the batching worker.

`Batcher` is continuous batching: one worker thread runs the model (`infer.models.ModelSet`)
for every request.

Requests wait in a queue. Between two decoding steps the worker admits waiting requests for
the adapter the running batch uses: it runs their prompts as one left-padded batch (prefill)
and joins their KV cache to the running one (`generate.merge`). Each step then feeds one token
per row; a row leaves the batch at EOS, a stop string, its token limit or when its client goes
away, and the others carry on. Requests for another adapter wait until the running batch has
drained, so one busy adapter cannot starve the others.

The worker reports back through each request's `emit` callback (thread-safe, e.g. a
`loop.call_soon_threadsafe` onto an asyncio queue) with typed events: `Text` (a piece of one
choice's answer), `Done` (a choice ended: finish reason and tokens generated) and `Failed`
(the request failed; no more events follow).

The worker must not die of one request. An exception while prefilling fails only the
requests being admitted, one while decoding only the running batch; both get a `Failed`
with a generic message (the traceback goes to the log). Should the worker thread itself
ever end for another reason, `alive` turns false, every request still waiting or running
gets a `Failed` (503) and `submit` refuses new ones, so nobody waits forever.
"""

from __future__ import annotations

import sys
import threading
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import torch

from dianjing.infer.generate import (KVBatch, SamplingParams, TextStream, can_rearrange, decode_step, merge,
                                     prefill, sample_rows, select)

MAX_PREFILL_TOKENS = 16384  # padded prompt tokens admitted in one prefill (bounds its memory); a single
# prompt longer than this is still prefilled, alone; a request's n choices share one prefilled row


# --- events and requests ------------------------------------------------------------------------


@dataclass(frozen=True)
class Text:
    """A piece of the answer of choice `index`."""

    index: int
    piece: str


@dataclass(frozen=True)
class Done:
    """Choice `index` ended: reason "stop" (EOS or a stop string) or "length"; `tokens` generated."""

    index: int
    reason: str
    tokens: int


@dataclass(frozen=True)
class Failed:
    """The request failed; no more events follow. `message` is safe to show a client."""

    message: str
    status: int


Event = Text | Done | Failed

GENERATION_FAILED = "generation failed; the server log has the details"


class Refused(Exception):
    """`Batcher.submit` cannot take a request: full (429), shutting down or worker stopped (503)."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status, self.message = status, message


@dataclass(eq=False)  # identity semantics: requests are kept in sets, dicts and deques
class GenRequest:
    """One API request: a prompt, `n` choices sampled from it, and where to send the results."""

    ids: list[int]
    params: SamplingParams
    adapter: str  # a name the batcher's `activate` callback understands
    tokenizer: object
    eos: set[int]
    emit: Callable[[Event], None]
    stops: tuple[str, ...] = ()
    n: int = 1
    cancelled: bool = False  # set by `Batcher.cancel`; the worker drops the request's rows
    finished: bool = False  # every choice is done, or the request failed: no more events
    n_done: int = 0  # choices that have ended


@dataclass(eq=False)
class _Row:
    req: GenRequest
    index: int
    gen: torch.Generator | None
    text: TextStream
    tokens: int = 0
    pending: int = 0  # the last sampled token, not yet fed to the model


# --- the worker ---------------------------------------------------------------------------------


class Batcher:
    """Runs generation for all requests in one background thread, batching them."""

    def __init__(self, model, pad_id: int, activate: Callable[[str], None] = lambda name: None,
                 max_batch: int = 16, log: Callable[[str], None] = lambda msg: print(msg, file=sys.stderr)):
        self.model, self.pad_id, self.activate, self.max_batch, self.log = model, pad_id, activate, max_batch, log
        self._cond = threading.Condition()
        self._waiting: deque[GenRequest] = deque()
        self._rows: list[_Row | None] = []  # None: a finished row kept because the cache cannot drop rows
        self._batch: KVBatch | None = None
        self._adapter: str | None = None
        self._rearrange = True  # can rows be added to and dropped from a running batch?
        self._stopping = False
        self._down: str | None = None  # why the worker is not running (None while it is)
        self._thread: threading.Thread | None = None
        self.stats = {"requests": 0, "prefills": 0, "prefill_rows": 0, "steps": 0, "generated_tokens": 0,
                      "max_batch_size": 0, "cancelled": 0, "failed": 0}

    # --- called from the server (any thread) ---

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dianjing-batcher", daemon=True)
        self._thread.start()

    @property
    def alive(self) -> bool:
        """Is the worker running and taking requests?"""
        return (self._down is None and not self._stopping and self._thread is not None
                and self._thread.is_alive())

    @property
    def down_reason(self) -> str | None:
        if self._stopping:
            return "the server is shutting down"
        if self._down is not None:
            return self._down
        if self._thread is None or not self._thread.is_alive():
            return "the generation worker is not running"
        return None

    def submit(self, req: GenRequest, max_waiting: int | None = None) -> None:
        """Queue a request, or raise `Refused`. The room check and the append are one step, so
        `max_waiting` holds exactly however many clients submit at once."""
        if not req.ids:
            raise ValueError("a request needs at least one prompt token")
        with self._cond:
            reason = self.down_reason
            if reason is not None:
                raise Refused(503, reason)
            if max_waiting is not None and len(self._waiting) >= max_waiting:
                raise Refused(429, f"{len(self._waiting)} requests are already waiting; retry later")
            self._waiting.append(req)
            self.stats["requests"] += 1
            self._cond.notify()

    def cancel(self, req: GenRequest) -> None:
        """Forget a request (its client went away); its rows leave the batch at the next step."""
        with self._cond:
            if req.finished or req.cancelled:
                return
            req.cancelled = True
            self.stats["cancelled"] += 1
            if req in self._waiting:
                self._waiting.remove(req)
            self._cond.notify()

    def waiting(self) -> int:
        return len(self._waiting)

    def running(self) -> int:
        return sum(r is not None for r in self._rows)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the worker; requests still waiting or running get a `Failed` (503)."""
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout)
        with self._cond:  # the worker normally does this itself; repeat in case it was stuck
            pending = list(self._waiting) + [r.req for r in self._rows if r is not None]
            self._waiting.clear()
        self._fail(pending, "the server is shutting down", 503)

    # --- the worker thread ---

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        why = "the server is shutting down"
        try:
            while self._next():
                pass
        except BaseException:  # not one request's failure (those are handled in _next): the worker ends
            self.log(f"the generation worker stopped:\n{traceback.format_exc()}")
            why = "the generation worker stopped; the server log has the details; restart the server"
        finally:
            with self._cond:
                if not self._stopping:
                    self._down = why
                pending = list(self._waiting) + [r.req for r in self._rows if r is not None]
                self._waiting.clear()
                self._rows, self._batch = [], None
            self._fail(pending, why, 503)

    def _next(self) -> bool:
        """Admit waiting requests and run one decoding step; False once the worker should stop."""
        with self._cond:
            while not self._stopping and not self._waiting and not self._rows:
                self._cond.wait()
            if self._stopping:
                return False
            admit = self._admit()
        if admit:
            try:
                new = self._prefill(admit)
            except Exception:  # a bug or out of memory in these prompts: fail them, keep the batch
                self._failed_step(admit)
                new = None
            if new is not None:
                try:
                    self._join(*new)
                except Exception:  # the running batch may be half-merged: fail all of it
                    self._failed_step(admit + self._live_requests())
                    self._rows, self._batch = [], None
        if self._rows:
            try:
                self._step()
            except Exception:
                self._failed_step(self._live_requests())
                self._rows, self._batch = [], None
        return True

    def _live_requests(self) -> list[GenRequest]:
        return [r.req for r in self._rows if r is not None]

    def _failed_step(self, reqs: list[GenRequest]) -> None:
        self.log(f"generation failed for {len(set(reqs))} request(s):\n{traceback.format_exc()}")
        self._fail(reqs, GENERATION_FAILED, 500)

    def _admit(self) -> list[GenRequest]:
        """Pick waiting requests to join the batch (called with the lock held)."""
        for req in [r for r in self._waiting if r.cancelled]:
            self._waiting.remove(req)
        if not self._waiting:
            return []
        if self._rows:
            if not self._rearrange or any(r.adapter != self._adapter for r in self._waiting):
                return []  # let the running batch drain: another adapter is waiting its turn
            adapter, room = self._adapter, self.max_batch - len(self._rows)
        else:
            adapter, room = self._waiting[0].adapter, self.max_batch
        taken: list[GenRequest] = []
        rows = longest = 0
        for req in list(self._waiting):
            if req.adapter != adapter:
                continue
            # one prefilled row per request (its n choices copy it), so the prefill holds
            # len(taken) rows of the longest prompt; a lone prompt is admitted whatever its length
            prefill_rows = len(taken) + 1 if self._rearrange else rows + req.n  # else every choice is prefilled
            fits = (rows + req.n <= room and prefill_rows * max(longest, len(req.ids)) <= MAX_PREFILL_TOKENS)
            if not fits and (taken or self._rows):
                break  # first come, first served: later requests do not overtake this one
            taken.append(req)
            self._waiting.remove(req)
            rows, longest = rows + req.n, max(longest, len(req.ids))
            if rows >= room:
                break
        return taken

    def _prefill(self, reqs: list[GenRequest]) -> tuple[KVBatch, list[_Row | None]] | None:
        """Prefill the prompts (one row each), copy each row for its n choices, sample the first tokens."""
        self._adapter = reqs[0].adapter
        self.activate(self._adapter)
        batch, logits = prefill(self.model, [req.ids for req in reqs], self.pad_id)
        self.stats["prefills"] += 1
        self.stats["prefill_rows"] += len(reqs)
        if any(req.n > 1 for req in reqs):
            copies = [i for i, req in enumerate(reqs) for _ in range(req.n)]
            if can_rearrange(batch.cache):
                batch, logits = select(batch, copies), logits[copies]
            else:  # a cache that cannot be indexed by row: prefill every choice's row
                batch, logits = prefill(self.model, [reqs[i].ids for i in copies], self.pad_id)
                self.stats["prefill_rows"] += len(copies)
        rows = [_Row(req, i, _generator(req.params.seed, i), TextStream(req.tokenizer, (*req.stops, *req.params.stop)))
                for req in reqs for i in range(req.n)]
        keep = self._advance(rows, logits)
        if not keep:
            return None
        if self._batch is None:
            self._rearrange = can_rearrange(batch.cache)
        if len(keep) < len(rows):
            if self._rearrange:
                batch = select(batch, keep)
                rows = [rows[i] for i in keep]
            else:
                rows = [r if i in keep else None for i, r in enumerate(rows)]
        return batch, rows

    def _join(self, batch: KVBatch, rows: list[_Row | None]) -> None:
        """Add freshly prefilled rows to the running batch."""
        if self._batch is None:
            self._batch, self._rows = batch, rows
        else:
            self._batch = merge(self._batch, batch)
            self._rows = self._rows + rows
        self.stats["max_batch_size"] = max(self.stats["max_batch_size"], len(self._rows))

    def _step(self) -> None:
        self._drop([i for i, r in enumerate(self._rows) if r is not None and not r.req.cancelled])
        if not self._rows:
            return
        self.activate(self._adapter)
        tokens = [r.pending if r is not None else self.pad_id for r in self._rows]
        logits = decode_step(self.model, self._batch, tokens)
        self.stats["steps"] += 1
        self.stats["max_batch_size"] = max(self.stats["max_batch_size"], len(self._rows))
        self._drop(self._advance(self._rows, logits))

    def _drop(self, keep: list[int]) -> None:
        """Keep only the rows `keep`; without row surgery, finished rows stay as padding until all end."""
        if len(keep) == len(self._rows):
            return
        if not keep:
            self._rows, self._batch = [], None
        elif self._rearrange:
            self._batch = select(self._batch, keep)
            self._rows = [self._rows[i] for i in keep]
        else:
            self._rows = [r if i in keep else None for i, r in enumerate(self._rows)]

    def _advance(self, rows: list[_Row | None], logits: torch.Tensor) -> list[int]:
        """Sample a token for every row and report it; returns the indices of rows that go on."""
        live = [i for i, r in enumerate(rows) if r is not None and not r.req.cancelled]
        if not live:
            return []
        sub = logits[live] if len(live) < len(rows) else logits
        tokens = sample_rows(sub, [rows[i].req.params for i in live], [rows[i].gen for i in live])
        keep = []
        for i, tok in zip(live, tokens):
            row = rows[i]
            reason = None
            if tok in row.req.eos:
                reason = "stop"
            else:
                row.tokens += 1
                self.stats["generated_tokens"] += 1
                piece = row.text.push(tok)
                if piece:
                    self._emit(row.req, Text(row.index, piece))
                if row.text.stopped:
                    reason = "stop"
                elif row.tokens >= row.req.params.max_new_tokens:
                    reason = "length"
            if reason is None:
                row.pending = tok
                keep.append(i)
                continue
            piece = row.text.finish()
            if piece:
                self._emit(row.req, Text(row.index, piece))
            self._emit(row.req, Done(row.index, reason, row.tokens))
        return keep

    def _emit(self, req: GenRequest, event: Event) -> None:
        if isinstance(event, Done):
            req.n_done += 1
            req.finished = req.n_done >= req.n
        try:
            req.emit(event)
        except RuntimeError:  # the event loop is closed: nobody is listening any more
            req.cancelled = True

    def _fail(self, reqs: list[GenRequest], message: str, status: int) -> None:
        seen: set[int] = set()
        for req in reqs:  # once per request, in order
            if id(req) in seen or req.finished or req.cancelled:
                continue
            seen.add(id(req))
            self.stats["failed"] += 1
            req.finished = True
            try:
                req.emit(Failed(message, status))
            except RuntimeError:
                pass


def _generator(seed: int | None, index: int) -> torch.Generator | None:
    """A seeded generator per choice (choice i uses seed + i), so `n` choices differ but repeat."""
    return torch.Generator().manual_seed(seed + index) if seed is not None else None
