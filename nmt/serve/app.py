"""The LibreTranslate-compatible HTTP API and the web page, as a Starlette application.

Routes (the field names, shapes and error texts follow LibreTranslate 1.9, so that its clients
work unchanged):

- ``POST /translate``: JSON or form fields ``q`` (a string, or in JSON a list of strings),
  ``source`` (a code or ``auto``), ``target``, ``format`` (``text``/``html``), ``alternatives``
  (int) and ``api_key``; answers ``{"translatedText": ...}`` plus ``alternatives`` when asked
  and ``detectedLanguage`` for ``auto``. An extension: ``glossary``, a JSON object of source
  term -> target term that the translations must follow, over the server's ``--glossary``.
- ``POST /detect``: ``q`` (a string or a list) and ``api_key``; answers up to three
  ``{"confidence", "language"}``, best first, over the languages the server translates from
  (:mod:`nmt.serve.detect`). With ``source: auto``, ``/translate`` detects each text's
  language among those that translate into the target and answers ``detectedLanguage`` per
  text.
- ``POST /translate_file``: a multipart form (``file``, ``source``, ``target``, ``api_key``);
  the file (``.txt``, ``.po``, ``.xlf``, ``.html``, ``.md``, ``.srt``, ``.vtt`` ...) is
  translated with its structure kept (:mod:`nmt.documents`) and answered
  ``{"translatedFileUrl"}``, to fetch from ``GET /download_file/NAME``
  (:mod:`nmt.serve.files`).
- ``GET /languages``: ``[{"code", "name", "targets"}]``; ``GET /health``: ``{"status": "ok"}``;
  ``GET /frontend/settings``: the fields of LibreTranslate's that apply; ``GET /``: the page.

Every reply carries LibreTranslate's CORS headers, and an ``OPTIONS`` preflight to any path is
answered 204 with them (``Access-Control-Max-Age``: 20 days). ``--char-limit`` counts each
text of a request, markup included, as LibreTranslate does. A request whose client
disconnects (or times out) has its lines dropped from the model's queue.

Every error is ``{"error": "..."}`` with 400 (bad input, unknown pair, over a limit), 403 (API
key), 404/405, 413 (body too large), 429 (rate limit), 503 (queue full or timed out) or 500; no
reply carries a traceback. Translation runs on each model's :class:`~nmt.serve.batcher.Batcher`
thread, never on the event loop; a text with several lines is translated line by line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nmt.documents import SUFFIXES, read_document
from nmt.documents.html import HtmlDocuments
from nmt.documents.units import Plan
from nmt.errors import DataError
from nmt.inference.glossary import Glossary
from nmt.serve.batcher import Batcher, QueueFull
from nmt.serve.detect import LanguageDetector
from nmt.serve.files import EXTENSIONS, TranslatedFiles

log = logging.getLogger("nmt.serve")

DRAIN = 64 << 20  # bytes of an oversized body read and dropped before the 413 reply

NAMES = {"ar": "Arabic", "cs": "Czech", "da": "Danish", "de": "German", "el": "Greek",
         "en": "English", "es": "Spanish", "fi": "Finnish", "fr": "French", "hi": "Hindi",
         "hu": "Hungarian", "it": "Italian", "ja": "Japanese", "ko": "Korean", "nl": "Dutch",
         "pl": "Polish", "pt": "Portuguese", "ro": "Romanian", "ru": "Russian",
         "sv": "Swedish", "tr": "Turkish", "uk": "Ukrainian", "zh": "Chinese"}


def language_name(code: str) -> str:
    """English name of a language code (the code itself when unknown)."""
    return NAMES.get(code, code)


class ApiError(Exception):
    """An error reply: HTTP status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status, self.message = status, message


@dataclass
class Limits:
    """What one request may ask for; 0 or None means no limit (see ``nmt serve --help``)."""

    char_limit: int = 10_000  # characters of each text of a request (markup included)
    batch_limit: int = 128  # texts in a list ``q``
    body_limit: int = 1 << 20  # bytes of a request body
    req_limit: int = 0  # requests per minute per API key or client address
    timeout: float = 60.0  # seconds a request waits for its translation
    api_keys: frozenset[str] | None = None  # keys required when given
    file_limit: int = 4 << 20  # bytes of a /translate_file request body


@dataclass
class ServedModel:
    """A language pair and the batcher of its model."""

    src: str
    tgt: str
    batcher: Batcher
    beam_size: int


@dataclass
class _RateLimiter:
    """Moving one-minute window of request times per client."""

    per_minute: int
    hits: dict[str, deque] = field(default_factory=lambda: defaultdict(deque))

    def allow(self, client: str) -> bool:
        if self.per_minute <= 0:
            return True
        now, window = time.monotonic(), self.hits[client]
        while window and now - window[0] >= 60.0:
            window.popleft()
        if len(self.hits) > 10_000:  # forget clients idle for a minute
            for idle in [c for c, w in self.hits.items() if not w or now - w[-1] >= 60.0]:
                del self.hits[idle]
            window = self.hits[client]
        if len(window) >= self.per_minute:
            return False
        window.append(now)
        return True


# ----------------------------------------------------------------------------- request parsing


async def _body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 past ``limit`` bytes (announced or streamed)."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if limit and size > limit:
            chunks = []  # read on and drop the rest (up to DRAIN bytes), so that the client,
            if size > DRAIN:  # still sending, reads the reply instead of a reset connection
                break
        else:
            chunks.append(chunk)
    if limit and size > limit:
        more = " or more" if size > DRAIN else ""
        raise ApiError(413, f"Invalid request: the body ({size:,} bytes{more}) exceeds the "
                            f"limit ({limit:,} bytes)")
    return b"".join(chunks)


async def _fields(request: Request, limit: int) -> dict:
    """The request's fields: a JSON object, or form fields over the query string."""
    body = await _body(request, limit)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    fields: dict = dict(request.query_params)
    if kind == "application/json":
        try:
            data = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise ApiError(400, f"Invalid JSON: {str(exc)[:200]}") from None
        if not isinstance(data, dict):
            raise ApiError(400, "Invalid JSON format: the body must be a JSON object")
        return {**fields, **data}
    if kind == "multipart/form-data":
        fields.update((await _form(request, body))[0])
        return fields
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "Invalid request: the body is not UTF-8") from None
    fields.update(parse_qsl(text, keep_blank_values=True))
    return fields


async def _form(request: Request, body: bytes) -> tuple[dict, tuple[str, bytes] | None]:
    """A multipart body's text fields, and its ``file`` part (name, bytes) if it has one."""
    async def replay() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    try:
        form = await Request(request.scope, replay).form()
    except Exception as exc:  # noqa: BLE001 - python-multipart's errors vary by version
        raise ApiError(400, f"Invalid form data: {exc}") from None
    upload = form.get("file")
    file = None
    if upload is not None and not isinstance(upload, str):
        file = (upload.filename or "", await upload.read())
    return {k: v for k, v in form.items() if isinstance(v, str)}, file


def _texts(fields: dict) -> tuple[list[str], bool]:
    """``q`` as a list of texts, and whether it came as a list."""
    q = fields.get("q")
    if q is None or q == "" or q == []:
        raise ApiError(400, "Invalid request: missing q parameter")
    texts = [q] if isinstance(q, str) else q
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise ApiError(400, "Invalid request: q must be a string or a list of strings")
    for text in texts:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from JSON's \ud800
            raise ApiError(400, "Invalid request: q holds a lone surrogate, which is not "
                                "text; send UTF-8") from None
    return texts, isinstance(q, list)


def _code(fields: dict, name: str) -> str:
    value = fields.get(name)
    if value is None or value == "":
        raise ApiError(400, f"Invalid request: missing {name} parameter")
    if not isinstance(value, str):
        raise ApiError(400, f"Invalid request: {name} must be a language code")
    return value.strip().lower()


GLOSSARY_LIMIT, GLOSSARY_TERM = 1000, 200  # entries of a request's glossary, term length


def _glossary(fields: dict) -> dict[str, str] | None:
    """A request's ``glossary`` (an extension of LibreTranslate's API): a JSON object of
    source term -> target term (in a form, the object as a JSON string), checked."""
    value = fields.get("glossary")
    if value is None or value == "" or value == {}:
        return None
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            raise ApiError(400, "Invalid request: glossary must be a JSON object of source "
                                "term -> target term") from None
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) and k.strip() and v.strip()
            and len(k) <= GLOSSARY_TERM and len(v) <= GLOSSARY_TERM for k, v in value.items()):
        raise ApiError(400, "Invalid request: glossary must be a JSON object of source term -> "
                            f"target term (non-empty strings of at most {GLOSSARY_TERM} "
                            "characters)")
    if len(value) > GLOSSARY_LIMIT:
        raise ApiError(400, f"Invalid request: the glossary has {len(value)} entries, more than "
                            f"{GLOSSARY_LIMIT}")
    return value


def _alternatives(fields: dict) -> int:
    value = fields.get("alternatives", 0)
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ApiError(400, "Invalid request: alternatives parameter is not a number")
    try:
        return max(0, int(value))
    except ValueError:
        raise ApiError(400, "Invalid request: alternatives parameter is not a number") from None


# ----------------------------------------------------------------------------- the service


class Service:
    """The models by language pair, the limits, and the route handlers."""

    def __init__(self, models: Sequence[ServedModel], limits: Limits) -> None:
        self.models = {(m.src, m.tgt): m for m in models}
        self.limits = limits
        self.rate = _RateLimiter(limits.req_limit)
        self.detector = LanguageDetector()
        self.files = TranslatedFiles()

    # ------------------------------------------------------------- languages and settings

    def languages(self) -> list[dict]:
        codes = sorted({code for pair in self.models for code in pair})
        return [{"code": code, "name": language_name(code),
                 "targets": sorted(t for s, t in self.models if s == code)} for code in codes]

    def settings(self) -> dict:
        src, tgt = next(iter(self.models))
        return {"charLimit": self.limits.char_limit or -1, "frontendTimeout": 500,
                "apiKeys": self.limits.api_keys is not None,
                "keyRequired": self.limits.api_keys is not None, "suggestions": False,
                "filesTranslation": True, "supportedFilesFormat": list(EXTENSIONS),
                "language": {"source": {"code": src, "name": language_name(src)},
                             "target": {"code": tgt, "name": language_name(tgt)}}}

    # ------------------------------------------------------------- checks

    def check_access(self, fields: dict, client: str) -> None:
        key = fields.get("api_key")
        if self.limits.api_keys is not None:
            if key is None or key == "":
                raise ApiError(403, "Please contact the server operator to get an API key")
            if not isinstance(key, str) or key not in self.limits.api_keys:
                raise ApiError(403, "Invalid API key")
        who = f"key:{key}" if self.limits.api_keys is not None else f"ip:{client}"
        if not self.rate.allow(who):
            raise ApiError(429, f"Slowdown: {self.limits.req_limit} per 1 minute")

    def pair(self, source: str, target: str) -> ServedModel:
        known = {code for pair in self.models for code in pair}
        if target not in known:
            raise ApiError(400, f"{target} is not supported")
        if source not in known:
            raise ApiError(400, f"{source} is not supported")
        model = self.models.get((source, target))
        if model is None:
            raise ApiError(400, f"{language_name(target)} ({target}) is not available as a "
                                f"target language from {language_name(source)} ({source})")
        return model

    def check_size(self, texts: list[str]) -> None:
        limits = self.limits
        if limits.batch_limit and len(texts) > limits.batch_limit:
            raise ApiError(400, f"Invalid request: request ({len(texts)}) exceeds text limit "
                                f"({limits.batch_limit})")
        for text in texts:  # each text, line endings counted as one character
            chars = len(text.replace("\r\n", "\n"))
            if limits.char_limit and chars > limits.char_limit:
                raise ApiError(400, f"Invalid request: request ({chars}) exceeds text limit "
                                    f"({limits.char_limit})")

    # ------------------------------------------------------------- detection

    def sources_into(self, target: str) -> list[str]:
        """The source languages with a model into ``target`` (``auto``'s candidates)."""
        known = {code for pair in self.models for code in pair}
        if target not in known:
            raise ApiError(400, f"{target} is not supported")
        sources = sorted(s for s, t in self.models if t == target)
        if not sources:
            raise ApiError(400, f"auto cannot choose the source language for {target}: none "
                                "can be translated into it; give source")
        return sources

    async def detect_each(self, texts: list[str], candidates: list[str],
                          html: bool = False) -> list[tuple[str, float]]:
        """The most likely candidate and its confidence for each text (of its text nodes
        when ``html``), run off the event loop."""
        if html:
            try:
                texts = [" ".join(HtmlDocuments([text]).runs) for text in texts]
            except ValueError as exc:
                raise ApiError(400, f"Invalid request: {exc}") from None

        def work() -> list[tuple[str, float]]:
            return [self.detector.rank(text, candidates)[0] for text in texts]

        return await asyncio.to_thread(work)

    async def detect(self, fields: dict, client: str) -> tuple[list[dict], int, int]:
        """The reply to a ``/detect`` request, its number of texts and characters."""
        self.check_access(fields, client)
        texts, _ = _texts(fields)
        self.check_size(texts)
        candidates = sorted({s for s, _ in self.models})
        reply = await asyncio.to_thread(self.detector.detect, texts, candidates)
        return reply, len(texts), sum(len(text) for text in texts)

    # ------------------------------------------------------------- translation

    async def translate_lines(self, model: ServedModel, lines: list[str], n_best: int,
                              glossary: dict[str, str] | None = None) -> list[list[str]]:
        """Up to ``n_best`` translations of each line (the batcher's search, awaited);
        ``glossary``: the request's terms, over the server's."""
        terms = None
        if glossary:
            base = model.batcher.glossary
            terms = Glossary({**(base.entries if base else {}), **glossary}.items())
        try:
            future = model.batcher.submit(lines, n_best, terms)
        except QueueFull as exc:
            raise ApiError(503, f"The server is busy ({exc}); try again later") from None
        except ValueError as exc:
            raise ApiError(400, f"Invalid request: {exc}") from None
        try:
            results = await asyncio.wait_for(asyncio.wrap_future(future), self.limits.timeout)
        except (TimeoutError, asyncio.TimeoutError):  # one class from Python 3.11 on
            future.cancel()
            raise ApiError(503, f"The translation took longer than {self.limits.timeout:g} s; "
                                "try again later or send less text") from None
        return [[text for text, _ in hyps] for hyps in results]

    async def translate_texts(self, model: ServedModel, texts: list[str], n_best: int,
                              glossary: dict[str, str] | None = None) -> list[list[str]]:
        """Each text's ``n_best`` translations; a text is translated line by line."""
        split = [text.replace("\r\n", "\n").replace("\r", "\n").split("\n") for text in texts]
        flat = [line for lines in split for line in lines]
        results = await self.translate_lines(model, flat, n_best, glossary) if flat else []
        out, start = [], 0
        for lines in split:
            hyps = results[start:start + len(lines)]
            start += len(lines)
            out.append(["\n".join(h[k] if k < len(h) else h[0] for h in hyps)
                        for k in range(n_best)])
        return out

    async def translate(self, fields: dict, client: str) -> tuple[dict, int, int]:
        """The reply to a ``/translate`` request, its number of texts and characters."""
        self.check_access(fields, client)
        texts, as_list = _texts(fields)
        source, target = _code(fields, "source"), _code(fields, "target")
        kind = fields.get("format") or "text"
        if kind not in ("text", "html"):
            raise ApiError(400, f"{kind} format is not supported")
        alternatives = _alternatives(fields)
        glossary = _glossary(fields)
        detected: list[tuple[str, float]] = []
        if source == "auto":
            candidates = self.sources_into(target)
            self.check_size(texts)
            detected = await self.detect_each(texts, candidates, html=kind == "html")
            models = [self.pair(code, target) for code, _ in detected]
        else:
            models = [self.pair(source, target)] * len(texts)
            self.check_size(texts)
        groups: dict[int, list[int]] = {}  # texts by model, each group one batch of its own
        for index, model in enumerate(models):
            groups.setdefault(id(model), []).append(index)
        outputs = await asyncio.gather(*(
            self.translate_group(models[rows[0]], [texts[i] for i in rows], kind, alternatives,
                                 glossary)
            for rows in groups.values()))
        translated, alts = [""] * len(texts), [[] for _ in texts]
        for rows, (group_texts, group_alts) in zip(groups.values(), outputs, strict=True):
            for row, text, alt in zip(rows, group_texts, group_alts, strict=True):
                translated[row], alts[row] = text, alt
        reply: dict = {"translatedText": translated if as_list else translated[0]}
        if alternatives:
            reply["alternatives"] = alts if as_list else alts[0]
        if detected:
            found = [{"confidence": confidence, "language": code} for code, confidence in detected]
            reply["detectedLanguage"] = found if as_list else found[0]
        return reply, len(texts), sum(len(text) for text in texts)

    async def translate_file(self, fields: dict, upload: tuple[str, bytes] | None,
                             client: str, link: Any) -> tuple[dict, int, int]:
        """The reply to a ``/translate_file`` request (``link(name)`` is the download URL of
        a kept file), its number of units and characters."""
        self.check_access(fields, client)
        if upload is None:
            raise ApiError(400, "Invalid request: missing file parameter")
        filename, data = upload
        if filename == "":
            raise ApiError(400, "Invalid request: empty file")
        source, target = _code(fields, "source"), _code(fields, "target")
        glossary = _glossary(fields)
        suffix = "." + filename.rpartition(".")[2].lower() if "." in filename else ""
        if suffix not in EXTENSIONS:
            raise ApiError(400, "Invalid request: file format not supported (send one of "
                                f"{', '.join(EXTENSIONS)})")
        try:
            document = await asyncio.to_thread(read_document, data, SUFFIXES[suffix], filename)
        except DataError as exc:
            raise ApiError(400, f"Invalid request: {exc}") from None
        texts = [unit.text for unit in document.units]
        for text in texts:
            if self.limits.char_limit and len(text) > self.limits.char_limit:
                raise ApiError(400, f"Invalid request: request ({len(text)}) exceeds text "
                                    f"limit ({self.limits.char_limit})")
        if source == "auto":
            candidates = self.sources_into(target)
            source = (await self.detect_each([" ".join(texts)[:5000]], candidates))[0][0]
        model = self.pair(source, target)
        plan = await asyncio.to_thread(Plan, document, model.src)
        lines: list[str] = []
        step = max(1, model.batcher.queue_limit // 2)
        for start in range(0, len(plan.lines), step):  # a file may hold more than the queue
            chunk = plan.lines[start:start + step]
            lines += [hyps[0] for hyps in await self.translate_lines(model, chunk, 1, glossary)]
        translations, report = plan.finish(lines)
        for problem in report.placeholder_errors:
            log.info("translate_file %s: %s: placeholders changed, left untranslated",
                     filename, problem)
        try:
            out = await asyncio.to_thread(document.render, translations)
        except (DataError, ValueError) as exc:
            raise ApiError(400, f"Invalid request: {filename}: cannot write the translation "
                                f"back ({exc})") from None
        name = self.files.add(filename, out)
        return {"translatedFileUrl": link(name)}, len(texts), sum(len(t) for t in texts)

    async def translate_group(self, model: ServedModel, texts: list[str], kind: str,
                              alternatives: int, glossary: dict[str, str] | None = None,
                              ) -> tuple[list[str], list[list[str]]]:
        """Texts of one model: their translations and alternatives (none for HTML)."""
        if kind == "html":
            try:
                documents = HtmlDocuments(texts)
            except ValueError as exc:
                raise ApiError(400, f"Invalid request: {exc}") from None
            runs = await self.translate_texts(model, documents.runs, 1, glossary)
            return documents.rebuild([hyps[0] for hyps in runs]), [[] for _ in texts]
        # the n-best list of beam search: at most beam size - 1 alternatives (fewer after
        # dropping duplicates), as LibreTranslate returns fewer than asked when it has them
        nbest = await self.translate_texts(model, texts, min(alternatives + 1, model.beam_size),
                                           glossary)
        return ([hyps[0] for hyps in nbest],
                [list(dict.fromkeys(h for h in hyps[1:] if h and h != hyps[0]))
                 for hyps in nbest])


# ----------------------------------------------------------------------------- the application


#: The CORS headers LibreTranslate sends on every reply (its ``after_request``), byte for byte.
CORS = [(b"access-control-allow-origin", b"*"),
        (b"access-control-allow-headers", b"Authorization, Content-Type"),
        (b"access-control-expose-headers", b"Authorization"),
        (b"access-control-allow-methods", b"GET, POST"),
        (b"access-control-allow-credentials", b"true"),
        (b"access-control-max-age", str(60 * 60 * 24 * 20).encode())]


def _json(data: object, status: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status)


async def _until_disconnect(request: Request) -> None:
    """Return when the client goes away (its body was read already, so the next message the
    server hands over is ``http.disconnect``)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


async def _unless_disconnected(request: Request, work: Any) -> Any:
    """Await ``work`` (a coroutine), cancelling it when the client disconnects first: its
    lines are then dropped from the queue (the batcher skips cancelled jobs)."""
    task = asyncio.ensure_future(work)
    watch = asyncio.ensure_future(_until_disconnect(request))
    try:
        await asyncio.wait([task, watch], return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if not task.done():
        task.cancel()
        log.info("%s %s: the client went away; its lines were dropped", request.method,
                 request.url.path)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return Response(status_code=499)  # nobody reads it
    return task.result()


def page() -> str:
    """The web page (package data ``nmt/serve/page.html``)."""
    return resources.files("nmt.serve").joinpath("page.html").read_text(encoding="utf-8")


def create_app(models: Sequence[ServedModel], limits: Limits) -> Starlette:
    """The ASGI application serving ``models`` under ``limits``.

    The batchers are closed (their queued jobs finished) when the application shuts down.
    """
    if not models:
        raise ValueError("nmt serve needs at least one model")
    service = Service(models, limits)
    html = page()

    async def answer(request: Request, handler: Any) -> Response:
        fields = await _fields(request, limits.body_limit)
        client = request.client.host if request.client else "unknown"
        result = await _unless_disconnected(request, handler(fields, client))
        if isinstance(result, Response):
            return result
        reply, items, chars = result
        request.scope["nmt.size"] = (items, chars)  # for the access log
        return _json(reply)

    async def translate(request: Request) -> Response:
        return await answer(request, service.translate)

    async def detect(request: Request) -> Response:
        return await answer(request, service.detect)

    async def translate_file(request: Request) -> Response:
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "multipart/form-data":
            raise ApiError(400, "Invalid request: send the file as multipart/form-data")
        fields, upload = await _form(request, await _body(request, limits.file_limit))
        fields = {**dict(request.query_params), **fields}
        client = request.client.host if request.client else "unknown"

        def link(name: str) -> str:
            return str(request.url_for("download_file", name=name))

        result = await _unless_disconnected(
            request, service.translate_file(fields, upload, client, link))
        if isinstance(result, Response):
            return result
        reply, items, chars = result
        request.scope["nmt.size"] = (items, chars)
        return _json(reply)

    async def download_file(request: Request) -> Response:
        found = service.files.get(request.path_params["name"])
        if found is None:
            raise ApiError(404, "Not found: no such translated file (they are kept for 30 "
                                "minutes)")
        filename, data = found
        return Response(data, media_type="application/octet-stream",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    async def languages(request: Request) -> Response:
        return _json(service.languages())

    async def settings(request: Request) -> Response:
        return _json(service.settings())

    async def health(request: Request) -> Response:
        return _json({"status": "ok"})

    async def index(request: Request) -> Response:
        return HTMLResponse(html)

    async def api_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ApiError)
        return _json({"error": exc.message}, exc.status)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return JSONResponse({"error": exc.detail}, status_code=exc.status_code,
                            headers=exc.headers)

    async def server_error(request: Request, exc: Exception) -> Response:
        log.error("%s %s failed: %s", request.method, request.url.path, exc,
                  exc_info=(type(exc), exc, exc.__traceback__))
        # this reply is made outside the middleware stack, so it adds the CORS headers itself
        return JSONResponse({"error": f"The server could not translate this request "
                                      f"({type(exc).__name__}); the log has the details"},
                            status_code=500,
                            headers={k.decode(): v.decode() for k, v in CORS})

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        for model in models:
            await asyncio.to_thread(model.batcher.close)

    return Starlette(
        routes=[Route("/", index), Route("/translate", translate, methods=["POST"]),
                Route("/detect", detect, methods=["POST"]),
                Route("/translate_file", translate_file, methods=["POST"]),
                Route("/download_file/{name:str}", download_file, name="download_file"),
                Route("/languages", languages), Route("/health", health),
                Route("/frontend/settings", settings)],
        middleware=[Middleware(AccessLog), Middleware(Cors)],
        exception_handlers={ApiError: api_error, HTTPException: http_error,
                            Exception: server_error},
        lifespan=lifespan)


class _HttpMiddleware:
    """An ASGI middleware that handles HTTP requests in :meth:`http` and passes the rest
    (lifespan) through unchanged."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: D102
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.http(scope, receive, send)

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one HTTP request."""
        raise NotImplementedError


class AccessLog(_HttpMiddleware):
    """One log line per request with its method, path, status, number of texts, characters
    and milliseconds; never the text or the API key."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: D102
        start, status = time.perf_counter(), [500]

        async def send_status(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            items, chars = scope.get("nmt.size", (0, 0))
            log.info("%s %s %d items=%d chars=%d %.0f ms", scope["method"], scope["path"],
                     status[0], items, chars, (time.perf_counter() - start) * 1000)


class Cors(_HttpMiddleware):
    """LibreTranslate's CORS headers on every reply (errors included), and a 204 with them for
    an ``OPTIONS`` preflight to any path, before routing."""

    async def http(self, scope: Scope, receive: Receive, send: Send) -> None:  # noqa: D102
        if scope["method"] == "OPTIONS":
            await send({"type": "http.response.start", "status": 204, "headers": CORS})
            await send({"type": "http.response.body", "body": b""})
            return

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {name.lower() for name, _ in message.get("headers", [])}
                message = {**message, "headers": [*message.get("headers", []),
                                                  *(h for h in CORS if h[0] not in names)]}
            await send(message)

        await self.app(scope, receive, send_with_cors)
