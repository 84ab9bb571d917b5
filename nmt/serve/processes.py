"""Continuous searches in child processes of their own (``nmt serve --workers-in processes``).

A worker thread of :class:`~nmt.serve.batcher.Batcher` in continuous mode drives one running
search (:class:`~nmt.inference.translator.Stream`): it admits sentences, takes a step, drops
those given up on. Torch releases the GIL inside its operations but holds it for the Python
between them, about 14% of a search's time with this repository's recipe model. Two searches
in one process, and the HTTP loop beside them, then wait for each other's Python: two
searches of one thread each finish 7-10% fewer sentences a second in one process than in two
(``docs/serving.md``). So here each worker's search runs in a child process that holds its
own copy of the model, and the worker thread keeps the rest of its job (the queue, the
tokenizer, answering requests): :class:`SearchProcess` starts the child, and its streams,
:class:`RemoteStream`, send ``admit``, ``step`` and ``drop`` through a pipe and wait for the
answer. A round trip takes 60-110 microseconds here, against torch's step of 3 ms for one
sentence and 15 for sixteen; ONNX Runtime's step of one sentence takes 1.1 ms, and a quarter
of its rate at one client went to the round trips, which is why ``nmt serve`` keeps the ONNX
backend's searches on threads unless asked (``--workers-in``).

The child loads the model from its directory with the arguments the server loaded it with
(:class:`ModelSource`), with as many torch threads as this process uses. It ignores SIGINT
and SIGTERM (a terminal's Ctrl-C and a service manager's stop reach the whole process group:
the server finishes what it holds, then closes the pipe), and it exits when the pipe closes:
at the server's exit (a finaliser closes the pipe before multiprocessing waits for its
children), or its death. Only this process writes to the pipe, so the pickles it
reads come from no one else.
"""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.util
import signal
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from multiprocessing.connection import Connection

    from nmt.config import DecodingConfig

log = logging.getLogger(__name__)

#: seconds a child has to load its model and answer that it is ready
START_TIMEOUT = 300.0


class SearchProcessError(RuntimeError):
    """A search failed in its child process, or the child stopped."""


@dataclass(frozen=True)
class ModelSource:
    """What a child process loads: :meth:`Translator.load
    <nmt.inference.translator.Translator.load>`'s arguments."""

    directory: str
    device: str = "auto"
    precision: str = "auto"
    quantize: str | None = None
    backend: str = "auto"

    def load(self) -> object:
        """The translator these arguments load."""
        from nmt.inference.translator import Translator

        return Translator.load(self.directory, self.device, self.precision, self.quantize,
                               self.backend)


def _serve_searches(conn: Connection, source: ModelSource, options: DecodingConfig,
                    threads: int) -> None:
    """The child: load the model, answer that it is ready, then run the parent's calls on one
    stream at a time until the pipe closes or the parent says ``close``."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from nmt.console import setup_logging

    setup_logging(quiet=True)
    try:
        import torch

        torch.set_num_threads(threads)
        translator = source.load()
        stream = translator.stream(options)
        ready = ("ok", None, 0)
    except Exception as exc:  # noqa: BLE001 - the parent reports it, as the server's start
        ready = ("error", f"{type(exc).__name__}: {exc}", 0)
    try:
        conn.send(ready)
    except OSError:  # the parent gave up waiting, or has gone
        return
    while ready[0] == "ok":
        try:
            op, arg = conn.recv()
        except (EOFError, OSError):  # the parent has gone
            return
        try:
            if op == "admit":
                stream.admit(arg)
                reply = None
            elif op == "step":
                reply = stream.step()
            elif op == "drop":
                stream.drop(arg)
                reply = None
            elif op == "new":
                stream = translator.stream(options)
                reply = None
            else:  # close
                conn.send(("ok", None, 0))
                return
            answer = ("ok", reply, len(stream))
        except Exception as exc:  # noqa: BLE001 - the parent fails the requests it held
            log.debug("the search failed", exc_info=True)
            answer = ("error", f"{type(exc).__name__}: {exc}", len(stream))
        try:
            conn.send(answer)
        except (BrokenPipeError, OSError):
            return


class SearchProcess:
    """A child process that runs one worker's continuous searches (see the module).

    Starting it returns at once; :meth:`wait_ready` waits until the model is loaded, so that
    several children load at the same time. :meth:`stream` gives a fresh search, and starts
    the child again if it has stopped.
    """

    def __init__(self, source: ModelSource, options: DecodingConfig,
                 threads: int | None = None) -> None:
        import torch

        self.source, self.options = source, options
        self.threads = threads or torch.get_num_threads()
        self._conn: Connection | None = None
        self._process: multiprocessing.process.BaseProcess | None = None
        self._ready = False
        self._start()

    def _start(self) -> None:
        # spawn: a fresh interpreter; a fork would copy torch's thread pools mid-flight
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self._process = context.Process(
            target=_serve_searches, args=(child, self.source, self.options, self.threads),
            name="nmt-search", daemon=True)
        self._process.start()
        child.close()
        self._ready = False
        # at the interpreter's exit multiprocessing terminates its daemonic children, then
        # waits for them; ours ignore SIGTERM (see the module) and leave when their pipe
        # closes, so it is closed first (finalisers of a higher priority run before)
        multiprocessing.util.Finalize(self, self._conn.close, exitpriority=10)

    @property
    def pid(self) -> int | None:
        """The child's process id (None before it started)."""
        return None if self._process is None else self._process.pid

    def wait_ready(self, timeout: float = START_TIMEOUT) -> None:
        """Wait until the child has loaded the model; :class:`SearchProcessError` with its
        reason if it could not (or did not within ``timeout`` seconds)."""
        if self._ready:
            return
        if not self._conn.poll(timeout):
            self.close()
            raise SearchProcessError(f"the search process did not load {self.source.directory} "
                                     f"within {timeout:.0f} s")
        self._receive()
        self._ready = True

    def stream(self) -> RemoteStream:
        """A new, empty search in the child (started again first if it has stopped)."""
        fresh = not self.running() or not self._ready  # a fresh child holds a fresh search
        self.wait_ready()
        if not fresh:
            try:
                self.call("new")
            except SearchProcessError:  # stopping, not yet gone: another in its place
                self.close(timeout=1.0)
                self.running()
                self.wait_ready()
        return RemoteStream(self)

    def running(self) -> bool:
        """True if the child was running; else start another (not waiting for it) and
        return False."""
        if self._process.is_alive():
            return True
        log.warning("the search process for %s stopped (exit code %s); starting another",
                    self.source.directory, self._process.exitcode)
        self._conn.close()
        self._start()
        return False

    def call(self, op: str, arg: object = None) -> tuple[object, int]:
        """Run ``op`` in the child: (its result, sentences its search holds now)."""
        try:
            self._conn.send((op, arg))
        except OSError:
            self._stopped()
        return self._receive()

    def _receive(self) -> tuple[object, int]:
        try:
            status, reply, held = self._conn.recv()
        except (EOFError, OSError):
            self._stopped()
        if status != "ok":
            raise SearchProcessError(reply)
        return reply, held

    def _stopped(self) -> None:
        self._process.join(1.0)
        raise SearchProcessError(f"the search process stopped (exit code "
                                 f"{self._process.exitcode})")

    def close(self, timeout: float = 5.0) -> None:
        """Stop the child: ask it, then kill it after ``timeout`` seconds (it ignores
        SIGTERM)."""
        if self._process is None:
            return
        if self._process.is_alive():
            try:
                self._conn.send(("close", None))
            except OSError:
                pass
            self._process.join(timeout)
            if self._process.is_alive():
                self._process.kill()
                self._process.join(timeout)
        self._conn.close()


class RemoteStream:
    """:class:`~nmt.inference.translator.Stream`'s calls, run by a :class:`SearchProcess`."""

    def __init__(self, process: SearchProcess) -> None:
        self.process = process
        self._held = 0

    def __len__(self) -> int:
        """Sentences being searched."""
        return self._held

    def admit(self, items: Sequence[tuple[object, Sequence[int]]]) -> None:
        """Start searching (key, source ids) items (see ``Stream.admit``). A child that
        stopped while this search held nothing is started again first: nothing was lost."""
        if not items:
            return
        if not self._held and not self.process.running():
            self.process.wait_ready()
        _, self._held = self.process.call("admit", [(key, list(ids)) for key, ids in items])

    def step(self) -> list[tuple[object, list[tuple[str, float]]]]:
        """One step of every sentence: the (key, hypotheses) of those it finished."""
        finished, self._held = self.process.call("step")
        return finished

    def drop(self, keys: Sequence[object]) -> None:
        """Stop searching the sentences of ``keys``."""
        if self._held:
            _, self._held = self.process.call("drop", list(keys))
