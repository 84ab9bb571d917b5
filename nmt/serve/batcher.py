"""Worker threads per model that merge concurrent requests into shared searches.

Request handlers call :meth:`Batcher.submit` (cheap: no tokenizer, no torch) and await the
returned future. The search settings are the server's one :class:`~nmt.config.DecodingConfig`
(whose ``long_lines`` is ``split`` unless ``nmt serve --long-lines truncate`` asked for the
cut: :func:`nmt.serve.server.load_models` sets it): the same search as ``nmt translate``.

**Continuous batching** (beam search, with ``continuous``: ``nmt serve --batching
continuous``): the worker keeps one running search
(:class:`nmt.inference.translator.Stream`) and, between two of its steps, admits the
sentences of the requests that arrived meanwhile (up to ``gather_tokens`` source pieces
searched at once). Each request is answered as soon as its own sentences are finished, so a
short sentence never waits for a long one, nor for a search that started before it. Requests
that wait for a worker are taken by the latency they are heading for, the longest first: the
time they have waited plus their search's expected time, their longest line's characters
times the seconds per character that this server's finished requests took (:class:`_Arrivals`;
in arrival order until a request has finished). A sentence's latency in a shared search grows
with its own length, so under load this takes long sentences in sooner and leaves short ones
waiting a little longer, which shortens the tail without costing throughput; a short request
waits at most about one long search more than in arrival order (``docs/serving.md``). A
sentence's hypotheses are those it gets searched alone. A search that starts from idle first
gathers what arrives less than ``max_wait`` seconds apart (at most ``GATHER_CAP *
max_wait``). Jobs asking for different n-best sizes share the search: beam search stops by its
beam size alone, and each job cuts the sorted list to its own n.

**Gathered batches** (the default; and always for greedy search, a lexical shortlist or a
server glossary): the worker takes the first waiting job, gathers jobs as above up to
``gather_tokens`` pieces, and
translates them with one :meth:`~nmt.inference.translator.Translator.translate_nbest` call,
jobs with different glossaries apart. A job with a glossary of its own is searched this way in
continuous mode too, between two steps. ``max_wait`` 0 turns batching across requests off:
each request is one search. Which mode serves better is measured in ``docs/serving.md``:
continuous batching gives the lower median latency and more throughput at a few clients,
gathered batches the tighter tail under heavy load (each sentence's latency in continuous mode
grows with its own length, as it shares every step with a full batch).

**Several workers** (``workers``; ``nmt serve --workers``): that many threads search at once,
each with its own searches, taking jobs from one queue (in continuous mode a worker takes
arrivals while it holds no more sentences than any other). Torch and ONNX Runtime release the
GIL inside their operations, so on a CPU two searches of one thread each keep two cores busy,
where one search of two threads waits for its slower thread at every small operation
(``docs/serving.md``). Each worker has its own shallow copy of the translator (the model and
tokenizers shared, read only; the per-call notes such as ``truncated`` its own). In continuous
mode with ``processes`` (``nmt serve``'s default for the torch backend) each worker's running
search is in a child process of its own instead (:mod:`nmt.serve.processes`): the Python
between a search's operations holds the GIL, so searches in one process, and the HTTP loop,
wait for each other there; the worker thread keeps the queue, the tokenizer and the answers
(and searches a job with a glossary of its own itself).

``queue_limit`` bounds the lines waiting (in continuous mode: until every part of their
request is admitted into the search); past it :meth:`submit` raises :class:`QueueFull` at
once. A job whose future was cancelled (its request timed out, or its client went away) is
dropped unrun, or from the running search at its next step; a failing search is retried
request by request (gathered batches), or fails the requests it held (continuous), so the
worker always goes on.
"""

from __future__ import annotations

import copy
import itertools
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nmt.config import DecodingConfig
    from nmt.inference.glossary import Glossary
    from nmt.inference.translator import Stream
    from nmt.serve.processes import ModelSource, RemoteStream, SearchProcess

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
    released: bool = False  # its lines no longer count as waiting (queue_limit)
    arrived: float = field(default_factory=time.monotonic)
    chars: int = 0  # characters of its longest line (its expected search time, _Arrivals)
    admitted: float | None = None  # continuous mode: when its first sentence joined a search


class _Arrivals(queue.Queue):
    """The jobs waiting for a worker, and after them the workers' stop marks (None).

    In arrival order, unless ``by_latency``: then :meth:`get` takes the job heading for the
    longest latency, the time it has waited plus ``per_char`` seconds per character of its
    longest line (its expected search time; ``per_char`` 0: arrival order), among the first
    ``SCAN`` waiting (a bounded cost per take however long the queue). A stop mark comes out
    only when no job is left (``close`` puts them after every job).
    """

    SCAN = 256

    def __init__(self, by_latency: bool) -> None:
        super().__init__()
        self.by_latency = by_latency
        self.per_char = 0.0  # seconds of search per character, learnt (Batcher._learn)

    def _init(self, maxsize: int) -> None:
        self.queue: deque[Job | None] = deque()

    def _get(self) -> Job | None:  # under the queue's lock
        if not self.by_latency or self.per_char <= 0 or len(self.queue) < 2:
            return self.queue.popleft()
        now, per_char = time.monotonic(), self.per_char
        best, heading = None, -1.0
        for i, job in enumerate(itertools.islice(self.queue, self.SCAN)):
            if job is None:  # the stop marks come after every job
                break
            latency = now - job.arrived + per_char * job.chars
            if latency > heading:  # the first of equals: arrival order
                best, heading = i, latency
        if best is None:
            return self.queue.popleft()
        job = self.queue[best]
        del self.queue[best]
        return job


@dataclass(eq=False)
class _Flight:
    """A job in continuous mode: its lines' parts, their source ids, and each part's
    hypotheses once found."""

    job: Job
    parts: list[list[str]]  # per line, the parts it is searched in
    sources: list[list[int] | None] = field(default_factory=list)  # per part (flat); None: empty
    found: list[list[tuple[str, float]] | None] = field(default_factory=list)  # None: searching
    left: int = 0  # parts still searching or waiting
    unadmitted: int = 0  # parts not yet admitted into the search (the job's lines wait)


@dataclass(eq=False)
class _Worker:
    """One worker thread's index and translator, and in continuous mode with ``processes``
    the child process that runs its searches."""

    index: int
    translator: object
    process: SearchProcess | None = None


class Batcher:
    """The worker threads of one :class:`~nmt.inference.translator.Translator`.

    Args:
        translator: the loaded model; only the worker threads use it (see the module).
        gather_tokens: source pieces gathered into one search at most (a larger single
            request still runs, as one call).
        max_wait: seconds to wait for more jobs after the first; 0 turns batching across
            requests off (each request is one search, as in a server without batching).
        queue_limit: lines that may wait; more gives :class:`QueueFull`.
        options: the search settings of every ``translate_nbest`` call (a request's n-best
            size replaces ``n_best``).
        continuous: batch beam search continuously when it can (see the module; ``nmt serve
            --batching continuous``); False (default): gathered batches only.
        workers: threads searching at once (see the module), at least 1.
        processes: in continuous mode, where each worker's searches run: in a child process
            that loads this model (see the module, :mod:`nmt.serve.processes`); None
            (default): in this process.
    """

    def __init__(self, translator, gather_tokens: int, max_wait: float, queue_limit: int,
                 options: DecodingConfig, glossary: Glossary | None = None,
                 continuous: bool = False, workers: int = 1,
                 processes: ModelSource | None = None) -> None:
        if workers < 1:
            raise ValueError(f"a batcher needs at least 1 worker, got {workers}")
        self.translator, self.glossary = translator, glossary
        self.gather_tokens, self.max_wait, self.queue_limit = gather_tokens, max_wait, queue_limit
        self.options = options
        self._waiting = 0  # lines submitted and not yet taken by the worker
        self._closed = False
        self._lock = threading.Lock()
        self.batches = 0  # searches run, or admissions into the running one (tests, the log)
        self.searched = [0] * workers  # sentences (line parts) each worker has searched
        # continuous batching: beam search, which BeamSearch can join sentences into
        self.continuous = (continuous and max_wait > 0 and options.beam_size > 1
                           and glossary is None
                           and hasattr(translator, "stream")
                           and getattr(translator, "shortlist", None) is None)
        self._jobs = _Arrivals(by_latency=self.continuous)
        # continuous mode: sentences each worker holds (waiting or searching); inf once it
        # has stopped, so that the others take what is left
        self._load = [0.0] * workers
        run = self._run_continuous if self.continuous else self._run
        # worker 0 uses the translator itself; the others a shallow copy each (see the module)
        crew = [_Worker(i, translator if i == 0 else copy.copy(translator))
                for i in range(workers)]
        if self.continuous and processes is not None:
            self._start_processes(crew, processes)
        self._crew = crew
        self._threads = [threading.Thread(target=run, args=(w,), name=f"nmt-batcher-{w.index}",
                                          daemon=True) for w in crew]
        for thread in self._threads:
            thread.start()

    def _start_processes(self, crew: list[_Worker], source: ModelSource) -> None:
        """Give each worker a child process for its searches; they load the model at the
        same time. If one cannot, stop them all and raise its reason."""
        from nmt.serve.processes import SearchProcess

        try:
            for w in crew:
                w.process = SearchProcess(source, self.options)
            for w in crew:
                w.process.wait_ready()
        except BaseException:
            for w in crew:
                if w.process is not None:
                    w.process.close()
            raise

    @property
    def processes(self) -> bool:
        """Whether the workers' searches run in child processes (continuous mode; a worker
        whose child cannot start again searches in this process from then on)."""
        return any(w.process is not None for w in self._crew)

    @property
    def workers(self) -> int:
        """Threads searching at once."""
        return len(self._threads)

    @staticmethod
    def _size(w: _Worker, line: str) -> int:
        """Source pieces of a line before any cut (worker thread)."""
        return w.translator.source_ids(line)[1] if line.strip() else 0

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
        job = Job(list(lines), n_best, glossary, chars=max(map(len, lines), default=0))
        self._jobs.put(job)
        return job.future

    def close(self, timeout: float = 30.0) -> None:
        """Refuse new jobs, finish the jobs queued so far, then stop the worker."""
        with self._lock:
            self._closed = True
        for _ in self._threads:  # one stop mark per worker, after every queued job
            self._jobs.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    # ----------------------------------------------------------------- the worker

    def _take(self, w: _Worker, job: Job) -> bool:
        """Count a job out of the queue; False for one whose request gave up (timed out)."""
        with self._lock:
            self._waiting -= len(job.lines)
        if not job.future.set_running_or_notify_cancel():
            return False
        try:
            job.sizes = [self._size(w, line) for line in job.lines]
        except Exception as exc:  # noqa: BLE001 - a line the tokenizer refuses fails its job
            job.future.set_exception(exc)
            return False
        return True

    def _gather(self, w: _Worker, first: Job) -> tuple[list[Job], bool]:
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
            if self._take(w, job):
                jobs.append(job)
                pieces += sum(job.sizes)
        return jobs, stop

    def _run(self, w: _Worker) -> None:
        """A worker of gathered batches: take a job, gather more, search them, again."""
        stop = False
        while not stop:
            first = self._jobs.get()
            if first is None:
                break
            if not self._take(w, first):
                continue
            jobs, stop = self._gather(w, first)
            try:
                groups: dict[int, list[Job]] = {}
                for job in jobs:  # one search per glossary, with the largest n-best asked
                    groups.setdefault(id(job.glossary), []).append(job)
                for group in groups.values():
                    self._translate(w, group, max(job.n_best for job in group))
            except Exception as exc:  # noqa: BLE001 - the worker must outlive any failure
                log.error("the translation worker failed: %s", exc,
                          exc_info=(type(exc), exc, exc.__traceback__))
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(exc)

    # ----------------------------------------------------------------- continuous batching

    def _run_continuous(self, w: _Worker) -> None:
        """A worker of continuous mode: take arrivals, drop what was given up on, admit
        waiting sentences, take one step, answer the jobs whose sentences are all found."""
        try:
            self._search_continuously(w)
        finally:  # the other workers take what is left
            self._load[w.index] = float("inf")
            if w.process is not None:
                w.process.close()

    def _new_stream(self, w: _Worker) -> Stream | RemoteStream:
        """An empty running search: in the worker's child process (started again if it has
        stopped), or in this process if it has none or it cannot start again."""
        if w.process is not None:
            try:
                return w.process.stream()
            except Exception as exc:  # noqa: BLE001 - this process can search on its own
                log.error("the search process cannot start (%s): searching in the server's "
                          "process from now on", exc)
                w.process.close()
                w.process = None
        return w.translator.stream(self.options)

    def _search_continuously(self, w: _Worker) -> None:
        stream = self._new_stream(w)
        waiting: deque[tuple[int, list[int]]] = deque()  # (key, source ids) not yet admitted
        owner: dict[int, tuple[_Flight, int]] = {}  # key -> its job's flight, part index
        searching: dict[int, int] = {}  # admitted key -> its source pieces
        flights: list[_Flight] = []
        keys = itertools.count()
        stop = False
        while not (stop and not flights):
            jobs: list[Job] = []
            self._load[w.index] = len(waiting) + len(searching)
            if not stop:
                idle = not flights
                stop = self._arrivals(w.index, jobs, block=idle)
                if idle and jobs and not stop:  # a search from idle gathers a moment first
                    stop = self._arrivals(w.index, jobs, block=False, window=True)
            for job in jobs:
                flight = self._plan(w, job)
                if flight is None or flight.left == 0:  # nothing to search (empty lines)
                    self._release(job)
                    if flight is not None:
                        self._answer(flight)
                    continue
                flight.unadmitted = flight.left
                flights.append(flight)
                for index, ids in enumerate(flight.sources):
                    if ids is not None:
                        key = next(keys)
                        owner[key] = (flight, index)
                        waiting.append((key, ids))
            gone: list[int] = []  # admitted keys given up on, dropped from the search below
            if any(f.job.future.cancelled() for f in flights):
                # given up on (timed out, client gone): out of the queue and the search
                dropped = {key for key, (f, _) in owner.items() if f.job.future.cancelled()}
                gone = [key for key in dropped if key in searching]
                waiting = deque(item for item in waiting if item[0] not in dropped)
                for key in dropped:
                    del owner[key]
                    searching.pop(key, None)
                for flight in flights:
                    if flight.job.future.cancelled():
                        self._release(flight.job)
                flights = [f for f in flights if not f.job.future.cancelled()]
            try:
                if gone:  # in the try: a search process may have stopped meanwhile
                    stream.drop(gone)
                admitted = self._admit(w.index, stream, waiting, sum(searching.values()))
                now = time.monotonic()
                for key, ids in admitted:
                    searching[key] = len(ids)
                    flight = owner[key][0]
                    if flight.job.admitted is None:
                        flight.job.admitted = now
                    flight.unadmitted -= 1
                    if not flight.unadmitted:  # all of it searching: its lines wait no more
                        self._release(flight.job)
                if not len(stream):
                    continue
                finished = stream.step()
            except Exception as exc:  # noqa: BLE001 - fails the requests it held, not the worker
                log.error("the running search failed: %s", exc,
                          exc_info=(type(exc), exc, exc.__traceback__))
                for flight in flights:
                    self._release(flight.job)
                    self._fail(flight.job, exc)
                flights, owner, searching, waiting = [], {}, {}, deque()
                stream = self._new_stream(w)
                continue
            for key, hyps in finished:
                flight, index = owner.pop(key)
                del searching[key]
                flight.found[index] = hyps
                flight.left -= 1
                if flight.left == 0:
                    flights.remove(flight)
                    self._answer(flight)
                    self._learn(flight.job)

    def _learn(self, job: Job) -> None:
        """Fold a searched job's seconds per character into the estimate that orders the
        waiting jobs (:class:`_Arrivals`): a moving average over the last few dozen."""
        if job.admitted is None or job.chars <= 0:
            return
        seconds = (time.monotonic() - job.admitted) / job.chars
        known = self._jobs.per_char
        self._jobs.per_char = seconds if known <= 0 else known + (seconds - known) / 32

    def _arrivals(self, worker: int, jobs: list[Job], block: bool,
                  window: bool = False) -> bool:
        """Move queued jobs into ``jobs``: wait for one when ``block``; with ``window``, keep
        gathering while they arrive less than ``max_wait`` apart (``GATHER_CAP`` periods at
        most); else take what is queued now. With several workers, ``worker`` takes another
        job only while it holds no more lines than any other worker. True when the queue says
        stop (close)."""
        now = time.monotonic()
        deadline, cap = now + self.max_wait, now + GATHER_CAP * self.max_wait
        while True:
            if not block and not self._least_loaded(worker, sum(len(j.lines) for j in jobs)):
                return False
            try:
                if block:
                    job, block = self._jobs.get(), False
                elif window:
                    timeout = min(deadline, cap) - time.monotonic()
                    if timeout <= 0:
                        return False
                    job = self._jobs.get(timeout=timeout)
                    deadline = time.monotonic() + self.max_wait
                else:
                    job = self._jobs.get_nowait()
            except queue.Empty:
                return False
            if job is None:
                return True
            jobs.append(job)  # its lines count as waiting until admitted (_release)

    def _least_loaded(self, worker: int, taken: int) -> bool:
        """Whether continuous ``worker``, holding ``taken`` more lines, holds no more than
        any other worker (always, alone)."""
        mine = self._load[worker] + taken
        return all(mine <= load for i, load in enumerate(self._load) if i != worker)

    def _plan(self, w: _Worker, job: Job) -> _Flight | None:
        """A job's lines as parts to search, with their source ids (empty parts found at
        once); None for a job given up on, one whose lines the tokenizer refuses (failed), or
        one with a glossary of its own (searched now, apart, as a gathered batch)."""
        if job.future.cancelled():
            return None
        if job.glossary is not None:
            if job.future.set_running_or_notify_cancel():
                self._translate(w, [job], job.n_best)
            return None
        try:
            flight = _Flight(job, [w.translator.parts(line, self.options)
                                   for line in job.lines])
            for part in (p for line in flight.parts for p in line):
                ids = None
                if part.strip():
                    ids, pieces = w.translator.source_ids(part)
                    if pieces > len(ids) - 1:
                        log.warning("a line of %d source pieces was translated from its first "
                                    "%d (the model's data.max_len)", pieces, len(ids) - 1)
                    flight.left += 1
                flight.sources.append(ids)
                flight.found.append(None if ids else [("", 0.0)] * job.n_best)
        except Exception as exc:  # noqa: BLE001 - a line the tokenizer refuses fails its job
            self._fail(job, exc)
            return None
        return flight

    def _admit(self, worker: int, stream: Stream, waiting: deque[tuple[int, list[int]]],
               pieces: int) -> list[tuple[int, list[int]]]:
        """Admit waiting sentences into ``stream``, oldest first, while it holds at most
        ``gather_tokens`` source pieces (``pieces`` now; the first into an empty search
        whatever its size). Returns those admitted."""
        budget = self.gather_tokens - pieces
        items: list[tuple[int, list[int]]] = []
        while waiting and (len(waiting[0][1]) <= budget or not (items or len(stream))):
            items.append(waiting.popleft())
            budget -= len(items[-1][1])
        if items:
            stream.admit(items)
            self.searched[worker] += len(items)
            with self._lock:
                self.batches += 1
        return items

    def _answer(self, flight: _Flight) -> None:
        """Set the job's result: each line's parts joined, cut to its n-best."""
        from nmt.inference.translator import join_parts

        results, start = [], 0
        for parts in flight.parts:
            results.append(join_parts(flight.found[start:start + len(parts)],
                                      flight.job.n_best))
            start += len(parts)
        try:
            flight.job.future.set_result(results)
        except InvalidStateError:  # cancelled meanwhile: nobody waits for it
            pass

    def _release(self, job: Job) -> None:
        """Stop counting a job's lines as waiting (once): admitted, answered or given up."""
        if not job.released:
            job.released = True
            with self._lock:
                self._waiting -= len(job.lines)

    @staticmethod
    def _fail(job: Job, exc: Exception) -> None:
        """Fail a job with ``exc``, unless its request gave up meanwhile."""
        try:
            job.future.set_exception(exc)
        except InvalidStateError:
            pass

    # ----------------------------------------------------------------- gathered batches

    def _translate_lines(self, translator, lines: list[str], n_best: int,
                         glossary: Glossary | None = None) -> Result:
        """``translator``'s translate_nbest over the lines with the server's options, this
        n-best size and ``glossary`` (default: the server's)."""
        return translator.translate_nbest(lines, self.options.updated(n_best=n_best),
                                               glossary=glossary or self.glossary)

    def _translate(self, w: _Worker, jobs: list[Job], n_best: int) -> None:
        lines = [line for job in jobs for line in job.lines]
        try:
            results = self._translate_lines(w.translator, lines, n_best, jobs[0].glossary)
        except Exception as exc:  # noqa: BLE001 - handed to the waiting request
            if len(jobs) > 1:  # one request's failure must not fail those merged with it
                for job in jobs:
                    self._translate(w, [job], n_best)
                return
            log.error("translation of a request of %d lines failed: %s", len(lines), exc,
                      exc_info=(type(exc), exc, exc.__traceback__))
            jobs[0].future.set_exception(exc)
            return
        self.searched[w.index] += len(lines)
        with self._lock:
            self.batches += 1
        for cut in getattr(w.translator, "truncated", []):
            log.warning("a line of %d source pieces was translated from its first %d (the "
                        "model's data.max_len)", cut.pieces, cut.kept)
        start = 0
        for job in jobs:  # each line's n-best cut to the job's own
            job.future.set_result([hyps[:job.n_best]
                                   for hyps in results[start:start + len(job.lines)]])
            start += len(job.lines)
