"""One worker thread per model that merges concurrent requests into batched searches.

Request handlers call :meth:`Batcher.submit` (cheap, never touches torch) and await the
returned future. The worker takes the first waiting job, then keeps gathering jobs while they
arrive less than ``max_wait`` seconds apart (at most ``GATHER_CAP * max_wait`` in all), up to
``gather_tokens`` source pieces, and translates them with
one :meth:`nmt.translate.Translator.translate_nbest` call: the same search as ``nmt translate``.
Jobs asking for different n-best sizes are decoded in separate calls (n-best changes when
beam search stops, so mixing them could change a request's best translation).

``queue_limit`` bounds the lines waiting; past it :meth:`submit` raises :class:`QueueFull` at
once. A job whose future was cancelled (its request timed out) is dropped unrun.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field

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
    pieces: int
    future: Future = field(default_factory=Future)


class Batcher:
    """The worker thread of one :class:`~nmt.translate.Translator`.

    Args:
        translator: the loaded model; only the worker thread uses it.
        gather_tokens: source pieces gathered into one search at most (a larger single
            request still runs, as one call).
        max_wait: seconds to wait for more jobs after the first; 0 turns batching across
            requests off (each request is one search, as in a server without batching).
        queue_limit: lines that may wait; more gives :class:`QueueFull`.
        options: settings of every ``translate_nbest`` call (beam size, batch_tokens, ...).
    """

    def __init__(self, translator, gather_tokens: int, max_wait: float, queue_limit: int,
                 **options: object) -> None:
        self.translator = translator
        self.gather_tokens, self.max_wait, self.queue_limit = gather_tokens, max_wait, queue_limit
        self.options = options
        self._jobs: queue.Queue[Job | None] = queue.Queue()
        self._waiting = 0  # lines submitted and not yet taken by the worker
        self._lock = threading.Lock()
        self.batches = 0  # searches run (for tests and the log)
        self._thread = threading.Thread(target=self._run, name="nmt-batcher", daemon=True)
        self._thread.start()

    def pieces(self, line: str) -> int:
        """Source pieces of a line (what a job costs against ``gather_tokens``)."""
        return len(self.translator.source_ids(line)[0]) if line.strip() else 0

    def submit(self, lines: Sequence[str], n_best: int = 1) -> Future:
        """Queue lines for translation; the future's result is a :data:`Result`."""
        with self._lock:
            if self._waiting + len(lines) > self.queue_limit:
                raise QueueFull(f"{self._waiting} lines are waiting (queue limit "
                                f"{self.queue_limit})")
            self._waiting += len(lines)
        job = Job(list(lines), n_best, sum(self.pieces(line) for line in lines))
        self._jobs.put(job)
        return job.future

    def close(self, timeout: float = 30.0) -> None:
        """Finish the jobs queued so far, then stop the worker."""
        self._jobs.put(None)
        self._thread.join(timeout)

    # ----------------------------------------------------------------- the worker

    def _take(self, job: Job) -> None:
        with self._lock:
            self._waiting -= len(job.lines)

    def _gather(self, first: Job) -> tuple[list[Job], bool]:
        """The first job and those arriving less than ``max_wait`` apart (``GATHER_CAP`` periods
        at most), up to ``gather_tokens`` source pieces."""
        jobs, pieces, stop = [first], first.pieces, False
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
            self._take(job)
            jobs.append(job)
            pieces += job.pieces
        return jobs, stop

    def _run(self) -> None:
        stop = False
        while not stop:
            first = self._jobs.get()
            if first is None:
                break
            self._take(first)
            jobs, stop = self._gather(first)
            jobs = [job for job in jobs if job.future.set_running_or_notify_cancel()]
            for n_best in sorted({job.n_best for job in jobs}):
                self._translate([job for job in jobs if job.n_best == n_best], n_best)

    def _translate(self, jobs: list[Job], n_best: int) -> None:
        lines = [line for job in jobs for line in job.lines]
        try:
            results = self.translator.translate_nbest(lines, n_best=n_best, **self.options)
        except Exception as exc:  # noqa: BLE001 - handed to every waiting request
            log.exception("translation of a batch of %d lines failed", len(lines))
            for job in jobs:
                job.future.set_exception(exc)
            return
        self.batches += 1
        start = 0
        for job in jobs:
            job.future.set_result(results[start:start + len(job.lines)])
            start += len(job.lines)
