"""Translation API: ``Translator.load(model_dir).translate(lines)``, and the line contract.

``model_dir`` is a model directory (the torch backend) or an ONNX export of ``nmt export``
(the ONNX Runtime backend, :class:`~nmt.onnx.runtime.OnnxModel`); both run the same search.

Lines are encoded with the model's SentencePiece model, sorted by length into token-budget
batches, decoded by :func:`nmt.models.search.decode_all` (greedy for beam size 1, else beam
search: the same path validation takes), and put back in input order. The search settings are
one :class:`~nmt.config.DecodingConfig`: the model's own, or a copy with overrides
(:meth:`Translator.options`), checked in one place.
Exactly one result per input line: an empty or whitespace-only line gives an empty
translation without running the model. A line longer than the model's limit (``data.max_len``
pieces, the longest pairs it was trained on) is translated in parts joined with a space
(``decoding.long_lines: split``, the default: whole sentences packed together, else runs of
words; :func:`split_long_line`) or from its first ``data.max_len`` pieces (``truncate``); a
source that is still cut (one word longer than the limit, or ``truncate``) is reported in
:attr:`Translator.truncated`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from nmt.config import Config, DecodingConfig, load_config
from nmt.data.batching import collate
from nmt.data.shortlist import Shortlist, tokenizer_key
from nmt.data.tokenizer import Tokenizer, load_from_dir
from nmt.device import (
    autocast,
    keep_large_allocations,
    resolve_device,
    resolve_precision,
)
from nmt.errors import ConfigError
from nmt.inference.glossary import Glossary, Unplaced
from nmt.layout import RunDir
from nmt.models.search import BeamSearch, decode_all, length_batches, score_all
from nmt.models.seq2seq import Ensemble, Seq2Seq
from nmt.models.weights import load_model_dir
from nmt.onnx.runtime import OnnxModel

log = logging.getLogger(__name__)


#: Target pieces of the glossary terms of one line at most: the constrained search widens its
#: beam to their number plus one.
MAX_TERM_PIECES = 32

SENTENCE_END = re.compile(r"(?<=[.!?;:\u3002\uff01\uff1f\u2026])\s+")


#: Lines whose source pieces a Translator keeps (:meth:`Translator.source_ids`).
ENCODED_MEMO = 4096


def split_long_line(line: str, pieces: Callable[[str], int], limit: int) -> list[str]:
    """A line as parts of at most ``limit`` source pieces: whole sentences packed together
    where they fit, a longer sentence cut between words (a word longer than ``limit`` alone
    stays whole; the translator then truncates it). A line that fits is returned as it is.

    ``pieces(text)`` counts a text's pieces; counts are added up across words and sentences
    (SentencePiece segments whitespace-separated words on their own; a word counted alone may
    take a piece more than in context, so parts err on the short side).
    """
    if pieces(line) <= limit:
        return [line]
    units: list[tuple[str, int]] = []
    for sentence in SENTENCE_END.split(line.strip()):
        size = pieces(sentence)
        if size <= limit:
            units.append((sentence, size))
        else:
            units.extend(_pack([(w, pieces(w)) for w in sentence.split()], limit))
    return [text for text, _ in _pack(units, limit)]


def _pack(units: list[tuple[str, int]], limit: int) -> list[tuple[str, int]]:
    """Consecutive (text, pieces) units joined with spaces into parts of at most ``limit``."""
    parts: list[tuple[str, int]] = []
    for text, size in units:
        if parts and parts[-1][1] + size <= limit:
            parts[-1] = (f"{parts[-1][0]} {text}", parts[-1][1] + size)
        else:
            parts.append((text, size))
    return parts


def _parts_to_lines(progress: Callable[[int], None], parts: int,
                    lines: int) -> Callable[[int], None]:
    """A progress callback counting parts done that reports lines done (in proportion, the
    last part making the total)."""
    state = {"parts": 0, "reported": 0}

    def update(done: int) -> None:
        state["parts"] += done
        lines_done = state["parts"] * lines // parts
        if lines_done > state["reported"]:
            progress(lines_done - state["reported"])
            state["reported"] = lines_done

    return update


@dataclass
class Truncation:
    """A line (or a part of a split line) shortened to the model's limit: the line's 0-based
    index, the pieces it had and those kept."""

    index: int
    pieces: int
    kept: int


@dataclass
class Scored:
    """A hypothesis scored by forced decoding: its total log-probability, its target pieces
    (EOS last) and each piece's log-probability."""

    log_prob: float
    pieces: list[str]
    token_log_probs: list[float]


class Translator:
    """A loaded model directory, ready to translate lists of lines."""

    def __init__(self, model: Seq2Seq | Ensemble | OnnxModel, config: Config,
                 src_tok: Tokenizer, tgt_tok: Tokenizer,
                 device: torch.device, dtype: torch.dtype | None) -> None:
        self.model, self.config = model.eval(), config
        self.src_tok, self.tgt_tok = src_tok, tgt_tok
        self.device, self.dtype = device, dtype
        # torch's batched search makes (beams x vocabulary) tensors every step; the ONNX
        # backend measured no gain from it (docs/benchmarks.md)
        if device.type == "cpu" and not isinstance(model, OnnxModel):
            keep_large_allocations()
        self.truncated: list[Truncation] = []
        self.unplaced: list[Unplaced] = []
        #: a lexical shortlist that limits every batch's output (:meth:`use_shortlist`)
        self.shortlist: Shortlist | None = None
        self._encoded: dict[str, tuple[int, ...]] = {}  # line -> its pieces (source_ids)

    def use_shortlist(self, model_dir: str | Path) -> Translator:
        """Limit each batch's output to its sentences' lexical shortlists, from the table in
        ``model_dir`` (``shortlist.safetensors``, made by ``nmt shortlist``); returns self."""
        run = RunDir(Path(model_dir))
        if not run.shortlist.is_file():
            how = (f"make one with nmt shortlist -m {run.root}" if not run.is_onnx_export() else
                   "make one in the model directory it came from (nmt shortlist -m MODEL_DIR) "
                   "and export again")
            raise ConfigError(f"{run.root} has no lexical shortlist ({run.shortlist.name}): "
                              f"{how}, or translate without --shortlist")
        self.shortlist = Shortlist.load(run.shortlist, self.src_tok.vocab_size,
                                        self.tgt_tok.vocab_size,
                                        tokenizer_key(self.src_tok, self.tgt_tok))
        return self

    @classmethod
    def load(cls, model_dir: str | Path, device: str = "auto", precision: str = "auto",
             quantize: str | None = None, backend: str = "auto") -> Translator:
        """Load a model directory (weights, config, tokenizers) for translation.

        ``quantize="int8"``: dynamic int8 quantization of the LSTMs and linear layers (CPU
        only; weights int8, activations quantized on the fly; runs in fp32 otherwise).
        ``backend``: ``torch`` (a model directory), ``onnx`` (an export of ``nmt export``, run
        by ONNX Runtime on the CPU; ``int8`` then takes the export's int8 graphs), or ``auto``
        (default): ``onnx`` for an export, else ``torch``.
        """
        if backend not in ("auto", "torch", "onnx"):
            raise ConfigError(f"unknown backend '{backend}' (auto, torch or onnx)")
        if quantize not in (None, "int8"):
            raise ConfigError(f"unknown quantization '{quantize}' (int8 is supported)")
        run = RunDir(Path(model_dir))
        exported = run.is_onnx_export()
        if backend == "onnx" or (backend == "auto" and exported):
            return cls._load_onnx(run, device, precision, quantize)
        if exported:
            raise ConfigError(f"{run.root} is an ONNX export (no {run.model.name}): translate "
                              "it with --backend onnx (or auto)")
        dev = resolve_device(device)
        model, config, src_tok, tgt_tok = load_model_dir(model_dir, dev)
        dtype = resolve_precision(precision, dev)
        if quantize == "int8":
            if dev.type != "cpu":
                raise ConfigError("--quantize int8 runs on the CPU only; use --device cpu")
            model, dtype = quantize_int8(model), None
        return cls(model, config, src_tok, tgt_tok, dev, dtype)

    @classmethod
    def _load_onnx(cls, run: RunDir, device: str, precision: str,
                   quantize: str | None) -> Translator:
        """An export of ``nmt export`` behind :class:`~nmt.onnx.runtime.OnnxModel` (CPU)."""
        if device == "cuda":
            raise ConfigError("the ONNX backend runs on the CPU: use --device cpu (or auto), "
                              "or the torch backend on a model directory for CUDA")
        if precision == "bf16":
            raise ConfigError("the ONNX backend runs in fp32 (or int8 with --quantize int8), "
                              "not bf16")
        model = OnnxModel.load(run.root, int8=quantize == "int8")
        config = load_config(run.config)
        src_tok, tgt_tok = load_from_dir(run.root)
        model.check_vocabularies(src_tok.vocab_size, tgt_tok.vocab_size, run.root)
        return cls(model, config, src_tok, tgt_tok, torch.device("cpu"), None)

    @property
    def backend(self) -> str:
        """``onnx`` for an ONNX Runtime export, else ``torch``."""
        return "onnx" if isinstance(self.model, OnnxModel) else "torch"

    @classmethod
    def load_ensemble(cls, model_dirs: Sequence[str | Path], device: str = "auto",
                      precision: str = "auto", quantize: str | None = None,
                      backend: str = "auto") -> Translator:
        """Several model directories decoded as one :class:`~nmt.models.seq2seq.Ensemble`.

        The models must share their source and target vocabularies (piece for piece); decoding
        settings and ``data.max_len`` come from the first model's config.
        """
        if len(model_dirs) == 1:
            return cls.load(model_dirs[0], device, precision, quantize, backend)
        if backend == "onnx" or any(RunDir(Path(d)).is_onnx_export() for d in model_dirs):
            raise ConfigError("an ensemble runs on the torch backend: give model directories, "
                              "not ONNX exports, with several -m")
        members = [cls.load(d, device, precision, quantize, backend) for d in model_dirs]
        first = members[0]
        for directory, other in zip(model_dirs[1:], members[1:], strict=True):
            for side in ("src_tok", "tgt_tok"):
                a, b = getattr(first, side), getattr(other, side)
                if _pieces(a) != _pieces(b):
                    what = "source" if side == "src_tok" else "target"
                    raise ConfigError(
                        f"cannot ensemble {model_dirs[0]} and {directory}: their {what} "
                        f"vocabularies differ ({a.vocab_size} and {b.vocab_size} pieces"
                        f"{', same size but other pieces' if a.vocab_size == b.vocab_size else ''}"
                        "); ensembles need models trained with the same SentencePiece model")
        ensemble = Ensemble([m.model for m in members]).eval()
        return cls(ensemble, first.config, first.src_tok, first.tgt_tok, first.device,
                   first.dtype)

    # ----------------------------------------------------------------- encoding the input

    def source_ids(self, line: str) -> tuple[list[int], int]:
        """A line's source ids (pieces + EOS), cut to the model's ``data.max_len`` pieces, and
        its number of pieces before the cut. The only place sources are truncated.

        The pieces of the last ``ENCODED_MEMO`` lines are kept, so that a line is tokenised
        once though it is counted before it is translated (the server's batcher, long lines)."""
        pieces = self._encoded.get(line)
        if pieces is None:
            if len(self._encoded) >= ENCODED_MEMO:
                self._encoded.clear()
            pieces = self._encoded[line] = tuple(self.src_tok.encode(line.strip(),
                                                                     add_eos=False))
        return [*pieces[: self.config.data.max_len], self.src_tok.eos_id], len(pieces)

    def _encode(self, lines: Sequence[str]) -> tuple[list[int], list[list[int]]]:
        """Indices of the non-empty lines and their source ids; truncations are recorded."""
        self.truncated = []
        indices, ids = [], []
        for index, line in enumerate(lines):
            if not line.strip():
                continue
            src, pieces = self.source_ids(line)
            if pieces > self.config.data.max_len:
                self.truncated.append(Truncation(index, pieces, self.config.data.max_len))
            indices.append(index)
            ids.append(src)
        return indices, ids

    # ----------------------------------------------------------------- translating

    def options(self, overrides: Mapping[str, Any] | None = None,
                label: Callable[[str], str] = "decoding.{}".format,
                **values: Any) -> DecodingConfig:
        """The model's ``decoding`` config with ``overrides`` / ``values`` in place of its
        settings, checked as the config is (None values are ignored; ``label(key)`` names a key
        in messages): the one options type that :meth:`translate_nbest`, the search and the
        server take."""
        return self.config.decoding.updated(overrides, label, **values)

    def translate_nbest(self, lines: Sequence[str], options: DecodingConfig | None = None,
                        progress: Callable[[int], None] | None = None,
                        glossary: Glossary | None = None,
                        **overrides: Any) -> list[list[tuple[str, float]]]:
        """Up to ``n_best`` (translation, score) pairs per line, best first, in input order.

        ``options`` (default: the model's ``decoding`` config) sets the search; keyword
        ``overrides`` (``beam_size=1``, ``n_best=3``, ...) replace some of its settings,
        checked as the config is. The score is the log-probability plus the word reward per
        token, divided by the GNMT length penalty (greedy and beam search alike); an empty line
        gets ``n_best`` empty translations. A line split in parts (``long_lines="split"``) gets
        the parts' k-th translations joined, scored with the mean of their scores (a part with
        fewer than k gives its last). ``progress`` receives the number of non-empty lines done.
        ``glossary``: the target terms of the source terms a line (or part) holds must appear in
        its translation (constrained beam search); a term the output does not hold is recorded
        in :attr:`unplaced`. Lines without a term are searched as without a glossary.
        """
        if not isinstance(options, DecodingConfig | None):
            raise TypeError(f"options must be a DecodingConfig (from Translator.options), got "
                            f"{type(options).__name__}; give settings by keyword: beam_size=5")
        # without options, one hypothesis per line unless asked (the config's n_best is not
        # a default of this call)
        base = options or self.config.decoding.updated(n_best=1)
        options = base.updated(overrides)
        n_best = options.n_best
        chunks = [self.parts(line, options) for line in lines]
        flat = [part for parts in chunks for part in parts]
        owner = [i for i, parts in enumerate(chunks) for _ in parts]
        if progress is not None and len(flat) > len(lines):
            progress = _parts_to_lines(progress, sum(1 for x in flat if x.strip()),
                                       sum(1 for x in lines if x.strip()))
        hyps = self._translate_parts(flat, options, progress, glossary)
        self.truncated = [Truncation(owner[cut.index], cut.pieces, cut.kept)
                          for cut in self.truncated]
        self.unplaced = [Unplaced(owner[miss.index], miss.source, miss.target)
                         for miss in self.unplaced]
        results, start = [], 0
        for parts in chunks:
            results.append(join_parts(hyps[start:start + len(parts)], n_best))
            start += len(parts)
        return results

    def parts(self, line: str, options: DecodingConfig) -> list[str]:
        """A line as the parts it is searched in: parts of at most ``data.max_len`` source
        pieces with ``long_lines: split`` (itself if it fits, or if empty), else itself."""
        if options.long_lines != "split" or not line.strip():
            return [line]
        return split_long_line(line, lambda text: self.source_ids(text)[1],
                               self.config.data.max_len)

    def stream(self, options: DecodingConfig) -> Stream:
        """A beam search with ``options`` that takes sentences while it runs (continuous
        batching; :class:`Stream`). Not with a lexical shortlist, whose output layer is cut to
        one batch's union."""
        if self.shortlist is not None:
            raise ConfigError("a search over a lexical shortlist takes no sentence while it "
                              "runs: translate in batches (translate_nbest)")
        return Stream(self, options)

    def _translate_parts(self, lines: list[str], options: DecodingConfig,
                         progress: Callable[[int], None] | None,
                         glossary: Glossary | None = None) -> list[list[tuple[str, float]]]:
        """translate_nbest's search over lines that are each translated whole (or cut)."""
        results: list[list[tuple[str, float]]] = [[("", 0.0)] * options.n_best
                                                  for _ in lines]
        indices, ids = self._encode(lines)
        self.unplaced = []
        terms = [self._terms(i, glossary.find(lines[i])) if glossary else [] for i in indices]
        constraints = ([[term for _, _, term in found] for found in terms] if any(terms)
                       else None)
        hypotheses = decode_all(self.model, ids, options, self.device, self.dtype, progress,
                                constraints, self.shortlist)
        for row, (index, hyps) in enumerate(zip(indices, hypotheses, strict=True)):
            results[index] = [(self.tgt_tok.decode(h.tokens), h.score) for h in hyps]
            for source, target, term in terms[row]:
                if not _holds(hyps[0].tokens if hyps else [], term):
                    self.unplaced.append(Unplaced(index, source, target))
        return results

    def _terms(self, index: int, found: list[tuple[str, str]]) -> list[tuple[str, str, list[int]]]:
        """The glossary terms of a line as (source, target, target ids) constraints: at most
        :data:`MAX_TERM_PIECES` pieces in all (the beam widens with them), none with a piece
        outside the target vocabulary; the others are :attr:`unplaced` at once."""
        out, pieces = [], 0
        for source, target in found:
            ids = self.tgt_tok.encode(target, add_eos=False)
            if not ids or self.tgt_tok.unk_id in ids or pieces + len(ids) > MAX_TERM_PIECES:
                self.unplaced.append(Unplaced(index, source, target))
                continue
            pieces += len(ids)
            out.append((source, target, ids))
        return out

    def translate(self, lines: Sequence[str], options: DecodingConfig | None = None,
                  progress: Callable[[int], None] | None = None,
                  glossary: Glossary | None = None, **overrides: Any) -> list[str]:
        """The best translation of each line, in input order (options, ``progress`` and
        ``glossary`` as :meth:`translate_nbest`; one hypothesis is searched for, whatever
        ``n_best`` says)."""
        options = (options or self.config.decoding).updated(overrides, n_best=1)
        return [hyps[0][0] for hyps in self.translate_nbest(lines, options, progress,
                                                            glossary)]

    def score(self, lines: Sequence[str], hypotheses: Sequence[str],
              batch_tokens: int | None = None) -> list[Scored]:
        """The model's log-probability of each hypothesis given its source line (forced
        decoding), with each target piece's share; EOS is scored as the last piece.

        The steps are the search's own (:func:`nmt.models.search.force_decode`), so a
        translation's total equals the log-probability beam search found for it (its score
        with length penalty 0 and no word reward). A source longer than ``data.max_len`` pieces
        is cut as the search cuts it (recorded in :attr:`truncated`); an empty source line is
        scored as EOS alone.
        """
        if len(lines) != len(hypotheses):
            raise ConfigError(f"{len(lines)} source lines but {len(hypotheses)} hypotheses: "
                              "score needs one hypothesis per source line")
        self.truncated = []
        sources = []
        for index, line in enumerate(lines):
            ids, pieces = self.source_ids(line)
            if pieces > self.config.data.max_len:
                self.truncated.append(Truncation(index, pieces, self.config.data.max_len))
            sources.append(ids)
        targets = [self.tgt_tok.encode(hyp.strip(), add_eos=True) for hyp in hypotheses]
        scores = score_all(self.model, sources, targets,
                           batch_tokens or self.config.decoding.batch_tokens, self.device,
                           self.dtype)
        return [Scored(sum(row), [self.tgt_tok.id_to_piece(i) for i in ids], row)
                for ids, row in zip(targets, scores, strict=True)]

    @torch.no_grad()
    def attention(self, lines: Sequence[str],
                  translations: Sequence[str]) -> list[tuple[list[str], list[str], np.ndarray]]:
        """(source pieces, target pieces, weights (T, S)) of each non-empty line.

        The translation is decoded again under teacher forcing, which yields the attention
        weights the search saw on that path; EOS is included on both sides. Empty lines give
        empty entries.
        """
        if isinstance(self.model, Ensemble):
            raise ConfigError("attention maps come from one model: give a single -m")
        if self.backend == "onnx":
            raise ConfigError("attention maps need the torch backend: give the model "
                              "directory, not its ONNX export")
        if self.model.decoder.attention is None:
            raise ConfigError("this model has no attention (model.attention: none): there is "
                              "nothing to plot")
        out: list[tuple[list[str], list[str], np.ndarray]] = []
        for line, hyp in zip(lines, translations, strict=True):
            if not line.strip():
                out.append(([], [], np.zeros((0, 0), dtype=np.float32)))
                continue
            src_ids, _ = self.source_ids(line)
            tgt_ids = self.tgt_tok.encode(hyp, add_bos=True, add_eos=True)
            src = torch.tensor([src_ids], device=self.device)
            tgt = torch.tensor([tgt_ids[:-1]], device=self.device)
            state = self.model.init_state(self.model.encode(src, torch.tensor([len(src_ids)])))
            _, weights = self.model.decoder.features(tgt, state)  # (1, T, S)
            out.append(([self.src_tok.id_to_piece(i) for i in src_ids],
                        [self.tgt_tok.id_to_piece(i) for i in tgt_ids[1:]],
                        weights[0].float().cpu().numpy()))
        return out

    @torch.no_grad()
    def encode_sentences(self, lines: Sequence[str], batch_tokens: int | None = None) -> np.ndarray:
        """(N, 2H) float32 sentence vectors: the top encoder layer's final forward and
        backward hidden states, rows in input order (an empty line encodes as EOS alone)."""
        if self.backend == "onnx":
            raise ConfigError("sentence vectors need the torch backend: give the model "
                              "directory, not its ONNX export")
        ids = [self.source_ids(line)[0] for line in lines]
        out = np.zeros((len(lines), self.model.encoder.output_size), dtype=np.float32)
        if not ids:
            return out
        for rows in length_batches(ids, batch_tokens or self.config.decoding.batch_tokens):
            batch = collate([ids[i] for i in rows], None, rows).to(self.device)
            with autocast(self.device, self.dtype):
                vectors = self.model.encode_sentences(batch.src, batch.src_lengths)
            out[rows] = vectors.float().cpu().numpy()
        return out


def join_parts(parts: Sequence[Sequence[tuple[str, float]]],
               n_best: int) -> list[tuple[str, float]]:
    """A line's n-best list from those of its parts (one part: its own, cut to ``n_best``):
    the parts' k-th translations joined with a space and scored with the mean of their
    scores (a part with fewer than k gives its last)."""
    if len(parts) == 1:
        return list(parts[0][:n_best])
    kth = [[h[min(k, len(h) - 1)] for h in parts] for k in range(n_best)]
    return [(" ".join(text for text, _ in row), sum(score for _, score in row) / len(row))
            for row in kth]


class Stream:
    """A beam search that takes sentences while it runs: continuous batching for ``nmt serve``.

    :meth:`admit` adds sentences (source ids from :meth:`Translator.source_ids`) under the
    caller's keys; they join the running search at the next step (:class:`BeamSearch`).
    :meth:`step` advances every sentence by one token and returns the translations of those it
    finished; :meth:`drop` gives sentences up. A sentence gets the hypotheses it gets searched
    alone (batch rounding aside), whenever it joined, so the server answers as
    ``nmt translate`` does. Each step runs under the translator's precision.
    """

    def __init__(self, translator: Translator, options: DecodingConfig) -> None:
        self.translator = translator
        o = options
        self.search = BeamSearch(translator.model, o.beam_size, o.length_penalty, o.max_len_a,
                                 o.max_len_b, o.min_len, o.no_repeat_ngram, o.word_reward,
                                 o.stopping)

    def __len__(self) -> int:
        """Sentences being searched."""
        return len(self.search)

    def admit(self, items: Sequence[tuple[object, Sequence[int]]]) -> None:
        """Start searching (key, source ids) items: encoded together, joined to the rest."""
        if not items:
            return
        t = self.translator
        keys = [key for key, _ in items]
        batch = collate([ids for _, ids in items], None, range(len(items))).to(t.device)
        with autocast(t.device, t.dtype):
            self.search.admit(batch.src, batch.src_lengths, keys)

    def step(self) -> list[tuple[object, list[tuple[str, float]]]]:
        """One step of every sentence: (key, (translation, score) pairs best first) of the
        sentences it finished (every hypothesis they finished; callers cut their n-best)."""
        t = self.translator
        with autocast(t.device, t.dtype):
            done = self.search.step()
        return [(key, [(t.tgt_tok.decode(h.tokens), h.score) for h in hyps])
                for key, hyps in done]

    def drop(self, keys: Sequence[object]) -> None:
        """Stop searching the sentences of ``keys``."""
        self.search.drop(keys)


def _holds(tokens: Sequence[int], term: Sequence[int]) -> bool:
    """Whether ``term`` occurs in ``tokens`` as a contiguous run."""
    n = len(term)
    return any(list(tokens[i:i + n]) == list(term) for i in range(len(tokens) - n + 1))


def word_alignment(src_pieces: Sequence[str], tgt_pieces: Sequence[str],
                   weights: np.ndarray) -> list[tuple[int, int]]:
    """Moses-style word alignment ``(source word, target word)`` pairs from attention.

    ``src_pieces`` and ``tgt_pieces`` are SentencePiece pieces with EOS last (as
    :meth:`Translator.attention` gives them), ``weights`` (T, S) their attention. Pieces are
    grouped into words (a piece starting with "▁" starts one), the attention summed over each
    source word's pieces and averaged over each target word's, and each target word is linked
    to the source word it attends to most (EOS left out on both sides). Sorted pairs.
    """
    def words(pieces: Sequence[str]) -> np.ndarray:
        starts = [number == 0 or piece.startswith("\u2581") for number, piece in enumerate(pieces)]
        return np.cumsum(starts) - 1

    src_n, tgt_n = len(src_pieces) - 1, len(tgt_pieces) - 1  # EOS last on both sides
    if src_n <= 0 or tgt_n <= 0:
        return []
    src_words, tgt_words = words(src_pieces[:src_n]), words(tgt_pieces[:tgt_n])
    by_word = np.zeros((int(tgt_words[-1]) + 1, int(src_words[-1]) + 1))
    np.add.at(by_word, (tgt_words[:, None], src_words[None, :]), weights[:tgt_n, :src_n])
    return sorted((int(i), j) for j, i in enumerate(by_word.argmax(axis=1)))


def _pieces(tok: Tokenizer) -> list[str]:
    return [tok.sp.id_to_piece(i) for i in range(tok.vocab_size)]


def quantize_int8(model: Seq2Seq) -> Seq2Seq:
    """Dynamic int8 quantization of every ``nn.LSTM`` and ``nn.Linear`` (CPU inference)."""
    import warnings

    with warnings.catch_warnings():  # torch.ao.quantization warns that it is deprecated
        warnings.simplefilter("ignore")
        return torch.ao.quantization.quantize_dynamic(
            model, {torch.nn.LSTM, torch.nn.Linear}, dtype=torch.qint8)


def plot_attention(path: str | Path, src_pieces: Sequence[str], tgt_pieces: Sequence[str],
                   weights: np.ndarray) -> None:
    """Heat map of attention weights (T, S): source pieces across, target pieces down."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from nmt.fileio import atomic_write

    width = max(4.0, 0.35 * len(src_pieces) + 1.5)
    height = max(3.0, 0.35 * len(tgt_pieces) + 1.0)
    fig, ax = plt.subplots(figsize=(width, height))
    ax.imshow(weights, cmap="viridis", aspect="auto", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(src_pieces)), src_pieces, rotation=90, fontsize=8)
    ax.set_yticks(range(len(tgt_pieces)), tgt_pieces, fontsize=8)
    ax.set_xlabel("source")
    ax.set_ylabel("translation")
    fig.tight_layout()
    with atomic_write(path, "wb") as handle:
        fig.savefig(handle, format="png", dpi=90)
    plt.close(fig)
