"""One worker thread per model that merges concurrent requests into batched searches.

Request handlers call :meth:`Batcher.submit` (cheap: no tokenizer, no torch) and await the
returned future. The worker takes the first waiting job, then keeps gathering jobs while they
arrive less than ``max_wait`` seconds apart (at most ``GATHER_CAP * max_wait`` in all), up to
``gather_tokens`` source pieces, and translates them with one
:meth:`nmt.inference.translator.Translator.translate_nbest` call: the same search as
``nmt translate``, with the server's one :class:`~nmt.config.DecodingConfig` (whose
``long_lines`` is ``split`` unless ``nmt serve --long-lines truncate`` asked for the cut:
:func:`nmt.serve.server.load_models` sets it). Jobs asking for different n-best sizes share one
search, run with the largest: beam search stops by its beam size alone and n-best only cuts its
sorted list, so each job's first n are what a search of its own would give (a test checks it).
Jobs with different glossaries are searched apart.

``queue_limit`` bounds the lines waiting; past it :meth:`submit` raises :class:`QueueFull` at
once. A job whose future was cancelled (its request timed out) is dropped unrun, and a search
that fails is retried request by request, so one bad request fails alone.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nmt.config import DecodingConfig
    from nmt.inference.glossary import Glossary

log = logging.getLogger(__name__)

GATHER_CAP = 10  # a batch waits at most this many max_wait periods in all

Result = list[list[tuple[str, float]]]  # per line: up to n (translation, score), best first


class QueueFull(Exception):
    """More lines are waiting than ``queue_limit`` allows."""


@dataclass
class Job:
    """Lines of one request, their n-best size, and the future that receives the result."""

    lines: list[str]
    n_best: int
    glossary: Glossary | None = None  # the request's own (merged with the server's)
    future: Future = field(default_factory=Future)
    sizes: list[int] = field(default_factory=list)  # source pieces per line (the worker counts)


class Batcher:
    """The worker thread of one :class:`~nmt.inference.translator.Translator`.

    Args:
        translator: the loaded model; only the worker thread uses it.
        gather_tokens: source pieces gathered into one search at most (a larger single
            request still runs, as one call).
        max_wait: seconds to wait for more jobs after the first; 0 turns batching across
            requests off (each request is one search, as in a server without batching).
        queue_limit: lines that may wait; more gives :class:`QueueFull`.
        options: the search settings of every ``translate_nbest`` call (a request's n-best
            size replaces ``n_best``).
    """

    def __init__(self, translator, gather_tokens: int, max_wait: float, queue_limit: int,
                 options: DecodingConfig, glossary: Glossary | None = None) -> None:
        self.translator, self.glossary = translator, glossary
        self.gather_tokens, self.max_wait, self.queue_limit = gather_tokens, max_wait, queue_limit
        self.options = options
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._waiting = 0  # lines submitted and not yet taken by the worker
        self._closed = False
        self._lock = threading.Lock()
        self.batches = 0  # searches run (for tests and the log)
        self._thread = threading.Thread(target=self._run, name="nmt-batcher", daemon=True)
        self._thread.start()

    def _size(self, line: str) -> int:
        """Source pieces of a line before any cut (worker thread)."""
        return self.translator.source_ids(line)[1] if line.strip() else 0

    def submit(self, lines: Sequence[str], n_best: int = 1,
               glossary: Glossary | None = None) -> Future:
        """Queue lines for translation; the future's result is a :data:`Result`. ``glossary``
        replaces the server's for these lines (jobs with different glossaries are searched
        apart).

        Raises :class:`QueueFull` when the lines would not fit (or the worker is closing), and
        :class:`ValueError` when the request alone holds more lines than the queue.
        """
        if len(lines) > self.queue_limit:
            raise ValueError(f"the request holds {len(lines)} lines, more than the queue takes "
                             f"({self.queue_limit}): send fewer lines per request")
        with self._lock:
            if self._closed:
                raise QueueFull("the server is shutting down")
            if self._waiting + len(lines) > self.queue_limit:
                raise QueueFull(f"{self._waiting} lines are waiting (queue limit "
                                f"{self.queue_limit})")
            self._waiting += len(lines)
        job = Job(list(lines), n_best, glossary)
        self._jobs.put(job)
        return job.future

    def close(self, timeout: float = 30.0) -> None:
        """Refuse new jobs, finish the jobs queued so far, then stop the worker."""
        with self._lock:
            self._closed = True
        self._jobs.put(None)
        self._thread.join(timeout)

    # ----------------------------------------------------------------- the worker

    def _take(self, job: Job) -> bool:
        """Count a job out of the queue; False for one whose request gave up (timed out)."""
        with self._lock:
            self._waiting -= len(job.lines)
        if not job.future.set_running_or_notify_cancel():
            return False
        try:
            job.sizes = [self._size(line) for line in job.lines]
        except Exception as exc:  # noqa: BLE001 - a line the tokenizer refuses fails its job
            job.future.set_exception(exc)
            return False
        return True

    def _gather(self, first: Job) -> tuple[list[Job], bool]:
        """The first job and those arriving less than ``max_wait`` apart (``GATHER_CAP`` periods
        at most), up to ``gather_tokens`` source pieces; jobs given up on are dropped."""
        jobs, stop, pieces = [first], False, sum(first.sizes)
        if self.max_wait <= 0:  # batching across requests is off: one request per search
            return jobs, stop
        now = time.monotonic()
        deadline, cap = now + self.max_wait, now + GATHER_CAP * self.max_wait
        while pieces < self.gather_tokens:
            try:
                timeout = min(deadline, cap) - time.monotonic()
                job = self._jobs.get(timeout=timeout) if timeout > 0 else self._jobs.get_nowait()
            except queue.Empty:
                break
            deadline = time.monotonic() + self.max_wait  # more may be on the way
            if job is None:
                stop = True
                break
            if self._take(job):
                jobs.append(job)
                pieces += sum(job.sizes)
        return jobs, stop

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._jobs.get()
            if first is None:
                break
            if not self._take(first):
                continue
            jobs, stop = self._gather(first)
            try:
                groups: dict[int, list[Job]] = {}
                for job in jobs:  # one search per glossary, with the largest n-best asked
                    groups.setdefault(id(job.glossary), []).append(job)
                for group in groups.values():
                    self._translate(group, max(job.n_best for job in group))
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any failure
                log.error("the translation worker failed: %s", exc,
                          exc_info=(type(exc), exc, exc.__traceback__))
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)

    def _translate_lines(self, lines: list[str], n_best: int,
                         glossary: Glossary | None = None) -> Result:
        """translate_nbest over the lines with the server's options, this n-best size and
        ``glossary`` (default: the server's)."""
        return self.translator.translate_nbest(lines, self.options.updated(n_best=n_best),
                                               glossary=glossary or self.glossary)

    def _translate(self, jobs: list[Job], n_best: int) -> None:
        lines = [line for job in jobs for line in job.lines]
        try:
            results = self._translate_lines(lines, n_best, jobs[0].glossary)
        except Exception as exc:  # noqa: BLE001 - handed to the waiting request
            if len(jobs) > 1:  # one request's failure must not fail those merged with it
                for job in jobs:
                    self._translate([job], n_best)
                return
            log.error("translation of a request of %d lines failed: %s", len(lines), exc,
                      exc_info=(type(exc), exc, exc.__traceback__))
            jobs[0].future.set_exception(exc)
            return
        self.batches += 1
        for cut in getattr(self.translator, "truncated", []):
            log.warning("a line of %d source pieces was translated from its first %d (the "
                        "model's data.max_len)", cut.pieces, cut.kept)
        start = 0
        for job in jobs:  # each line's n-best cut to the job's own
            job.future.set_result([hyps[:job.n_best]
                                   for hyps in results[start:start + len(job.lines)]])
            start += len(job.lines)
