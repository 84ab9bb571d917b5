"""``nmt serve``: load the model directories, check the flags, run the app on uvicorn.

SIGTERM stops accepting connections, lets the requests in flight finish (each waits at most
``--timeout``), closes the batchers and returns 0; Ctrl-C does the same and exits 130.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from nmt.errors import ConfigError, NMTError
from nmt.serve.app import Limits, ServedModel

log = logging.getLogger("nmt.serve")


def read_api_keys(path: str | Path) -> frozenset[str]:
    """Keys of a file, one per line; blank lines and lines starting with # are skipped."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the API keys file {path}: {exc}") from None
    keys = frozenset(line.strip() for line in text.splitlines()
                     if line.strip() and not line.lstrip().startswith("#"))
    if not keys:
        raise ConfigError(f"the API keys file {path} holds no key (one key per line)")
    return keys


def language_pair(directory: str | Path) -> tuple[str, str]:
    """(source, target) codes of a model directory, from its config (nothing else loaded)."""
    from nmt.config import load_config
    from nmt.layout import RunDir

    run = RunDir(directory)
    if not run.root.is_dir():
        raise ConfigError(f"model directory not found: {run.root}")
    if not run.config.is_file():
        raise ConfigError(f"{run.root} is not a model directory (no {run.config.name}): give "
                          "the output directory of a trained run")
    data = load_config(run.config).data
    return data.src_lang.lower(), data.tgt_lang.lower()


def load_models(model_dirs: Sequence[str], device: str, precision: str, quantize: str | None,
                max_wait: float, queue_limit: int, backend: str = "auto",
                decoding: Mapping[str, Any] | None = None,
                glossary: str | None = None, shortlist: bool = False,
                continuous: bool = False, workers: int = 1,
                workers_in: str = "threads") -> list[ServedModel]:
    """One :class:`ServedModel` per directory (a model directory, or an ONNX export with
    ``backend`` onnx or auto); a pair served twice is a :class:`ConfigError` (found from the
    configs, before any model is loaded).

    ``decoding`` overrides some of each model's decoding settings (checked as the config is).
    A line longer than a model's ``data.max_len`` pieces is translated in parts, whatever the
    model's ``decoding.long_lines`` says, unless ``decoding`` asks for ``truncate``.
    ``glossary``: a TSV glossary every model's translations must follow (its target terms are
    encoded by each model's own target SentencePiece model). ``shortlist``: each model
    searches over its lexical shortlist (``shortlist.safetensors``). ``continuous``: beam
    search batches continuously (:class:`~nmt.serve.batcher.Batcher`), else in gathered
    batches. ``workers``: searches each model runs at once (threads of its batcher).
    ``workers_in``: ``processes``: continuous searches run in child processes, one per
    worker, each loading the model as this one does (:mod:`nmt.serve.processes`); ``threads``:
    in this process; ``auto``: processes on the torch backend, threads on ONNX Runtime's, where
    a round trip to a child per step costs more than the GIL does (``docs/serving.md``)."""
    if workers_in not in ("auto", "processes", "threads"):
        raise ConfigError(f"unknown workers_in '{workers_in}' (auto, processes or threads)")
    from nmt.inference.glossary import Glossary
    from nmt.inference.translator import Translator
    from nmt.serve.batcher import Batcher
    from nmt.serve.processes import ModelSource, SearchProcessError

    pairs: dict[tuple[str, str], str] = {}
    for directory in model_dirs:
        pair = language_pair(directory)
        if pair in pairs:
            raise ConfigError(f"{directory} and {pairs[pair]} both translate "
                              f"{pair[0]} -> {pair[1]}: serve one model per language pair")
        pairs[pair] = directory
    terms = Glossary.read(glossary) if glossary else None
    models = []
    for pair, directory in pairs.items():
        try:
            translator = Translator.load(directory, device, precision, quantize, backend)
            if shortlist:
                translator.use_shortlist(directory)
        except NMTError as exc:
            raise ConfigError(f"model directory {directory}: {exc}") from None
        given = {k: v for k, v in (decoding or {}).items() if v is not None}
        # n_best: each request sets its own (alternatives); long lines split unless asked
        options = translator.options({"long_lines": "split", "n_best": 1, **given})
        processes = workers_in == "processes" or (workers_in == "auto"
                                                   and translator.backend == "torch")
        source = (ModelSource(str(directory), device, precision, quantize, backend)
                  if processes else None)
        try:
            batcher = Batcher(translator, options.batch_tokens, max_wait, queue_limit, options,
                              terms, continuous, workers, source)
        except (SearchProcessError, OSError) as exc:
            for served in models:  # those started before: their search processes stop
                served.batcher.close()
            raise ConfigError(f"model directory {directory}: {exc}") from None
        models.append(ServedModel(*pair, batcher=batcher, beam_size=options.beam_size))
        log.info("serving %s -> %s from %s (beam %d, %s backend, %d search%s at once%s)", *pair,
                 directory, options.beam_size, translator.backend, workers,
                 "" if workers == 1 else "es",
                 ", each in a process of its own" if batcher.processes else "")
    return models


def check_port(host: str, port: int) -> None:
    """Refuse, with one line, an address that cannot be listened on (taken or unknown)."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        with socket.socket(infos[0][0], socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind(infos[0][4])
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror or exc}): choose "
                          "another --port or --host") from None


#: Bytes of a request line and headers that the HTTP layer accepts (h11's default is 16 KiB):
#: deep-translator sends its text in the query string, up to its cap of 5,000 characters,
#: which is 45 KiB of percent-encoded CJK. Bodies keep their own limit (--body-limit).
MAX_REQUEST_HEAD = 256 << 10


def uvicorn_config(app: Any, host: str, port: int, **options: Any) -> Any:
    """uvicorn's config for the app: h11 with request lines of up to ``MAX_REQUEST_HEAD``
    bytes (chosen explicitly, so an installed httptools does not change the limits), no
    server header, our own logging."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, http="h11",
                          h11_max_incomplete_event_size=MAX_REQUEST_HEAD, access_log=False,
                          log_config=None, server_header=False, **options)


def run(models: list[ServedModel], limits: Limits, host: str, port: int) -> int:
    """Serve until SIGTERM (exit 0) or Ctrl-C (130)."""
    import uvicorn

    from nmt.serve.app import create_app

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: object) -> None:  # noqa: D102
            if sig == signal.SIGTERM:  # a clean stop: finish what is in flight, then exit 0
                self.should_exit = True
            else:
                super().handle_exit(sig, frame)  # type: ignore[arg-type]

    server = Server(uvicorn_config(create_app(models, limits), host, port,
                                   timeout_graceful_shutdown=int(limits.timeout) + 5))
    # uvicorn's own lines (started, shutting down) at the level of ours
    logging.getLogger("uvicorn.error").setLevel(logging.getLogger("nmt.serve").getEffectiveLevel())
    log.info("listening on http://%s:%d (the page is at /)", host, port)
    server.run()
    return 0 if server.started else 2
