"""SentencePiece stage: train subword models, load them, encode text to ids and decode back.

The special ids are fixed for the whole toolkit and every model trained here carries them:
``PAD_ID = 0``, ``UNK_ID = 1``, ``BOS_ID = 2``, ``EOS_ID = 3``. A loaded model is checked to
agree, and :class:`Tokenizer` reads them from the model itself.

With ``byte_fallback`` (the default), characters outside the vocabulary are spelled as UTF-8
byte pieces, so ``decode(encode(x)) == normalize(x)`` for any text, CJK and emoji included.
``normalize`` applies the model's normalisation rule, which is stored in the model file:

- ``nmt_nfc`` (the default, ours): Unicode NFC (canonical composition only), control characters
  removed, tabs and line breaks made spaces, runs of spaces collapsed. It keeps every character
  NFKC rewrites ("…", "²", "½", "ﬁ", full-width forms, no-break spaces), so the output can
  reproduce them: ``decode(encode(x)) == x`` for NFC text without control characters or
  extra spaces. Built by :func:`nfc_rules` as a SentencePiece rule table (composition, not
  the reordering of stacked combining marks that full NFC also does: text already in NFC, as
  nearly all text is, stays exactly as it is).
- SentencePiece's own ``nmt_nfkc`` (its default), ``nfkc``, their case-folding variants, and
  ``identity``. ``nmt_nfkc`` maps "…" to "..." and "²" to "2": a model trained with it can
  never emit them.
"""

from __future__ import annotations

import functools
import io
import os
import random
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import sentencepiece as spm

from nmt.config import TokenizerConfig
from nmt.errors import ConfigError, NMTError
from nmt.fileio import sha256_file, write_bytes_atomic

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"
SPECIAL_IDS = {"pad": PAD_ID, "unk": UNK_ID, "bos": BOS_ID, "eos": EOS_ID}

#: Our normalisation rule (see the module docstring); the other names are SentencePiece's.
NFC_RULE = "nmt_nfc"

JOINT_MODEL = "spm.model"
SRC_MODEL = "src.spm.model"
TGT_MODEL = "tgt.spm.model"


class Tokenizer:
    """A loaded SentencePiece model with the toolkit's special ids.

    Args:
        model: path of a ``.model`` file, or its serialized bytes.
    """

    def __init__(self, model: str | os.PathLike | bytes) -> None:
        if isinstance(model, bytes):
            self.model_bytes = model
            self.path: Path | None = None
        else:
            self.path = Path(model)
            if not self.path.is_file():
                raise NMTError(f"SentencePiece model not found: {self.path}")
            self.model_bytes = self.path.read_bytes()
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.LoadFromSerializedProto(self.model_bytes)
        except (RuntimeError, OSError) as exc:
            raise NMTError(f"{self.path or 'model bytes'}: not a SentencePiece model ({exc})") \
                from None
        self.pad_id, self.unk_id = self.sp.pad_id(), self.sp.unk_id()
        self.bos_id, self.eos_id = self.sp.bos_id(), self.sp.eos_id()
        found = {"pad": self.pad_id, "unk": self.unk_id, "bos": self.bos_id, "eos": self.eos_id}
        if found != SPECIAL_IDS:
            raise NMTError(f"{self.path or 'SentencePiece model'}: special ids {found} differ "
                           f"from the toolkit's {SPECIAL_IDS}; train it with nmt prepare or with "
                           "pad_id=0 unk_id=1 bos_id=2 eos_id=3")

    def __getstate__(self) -> dict:
        """Pickle as the model bytes (``Dataset.map`` with several processes sends tokenizers)."""
        return {"model_bytes": self.model_bytes, "path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["model_bytes"])
        self.path = state["path"]

    @property
    def vocab_size(self) -> int:
        """Number of pieces, special symbols included."""
        return self.sp.get_piece_size()

    def encode(self, text: str, add_bos: bool = False, add_eos: bool = True) -> list[int]:
        """Ids of one line: pieces, with optional BOS first and EOS last."""
        return self.sp.encode(text, add_bos=add_bos, add_eos=add_eos)

    def encode_batch(self, texts: Sequence[str], add_bos: bool = False,
                     add_eos: bool = True) -> list[list[int]]:
        """Ids of many lines at once (SentencePiece's batched C++ path)."""
        return self.sp.encode(list(texts), add_bos=add_bos, add_eos=add_eos)

    def sample_batch(self, texts: Sequence[str], alpha: float, nbest: int,
                     add_bos: bool = False, add_eos: bool = True) -> list[list[int]]:
        """Ids of many lines, each a sampled segmentation (subword regularisation).

        Unigram models sample among the ``nbest`` best segmentations (-1: all of them) with
        smoothing ``alpha``; BPE models drop merges with probability ``alpha`` (BPE-dropout).
        One thread, so that a seed set with ``spm.set_random_generator_seed`` before the
        thread's first draw fixes the result (see :mod:`nmt.data.subword_sampling`).
        """
        return self.sp.encode(list(texts), add_bos=add_bos, add_eos=add_eos,
                              enable_sampling=True, alpha=alpha, nbest_size=nbest,
                              num_threads=1)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of one id sequence; pad/bos/eos are dropped, and decoding stops at the first EOS."""
        ids = list(ids)
        if self.eos_id in ids:
            ids = ids[: ids.index(self.eos_id)]
        return self.sp.decode([i for i in ids if i not in (self.pad_id, self.bos_id)])

    def decode_batch(self, batch: Iterable[Sequence[int]]) -> list[str]:
        """Texts of many id sequences."""
        return [self.decode(ids) for ids in batch]

    def pieces(self, text: str) -> list[str]:
        """The subword pieces of a line (for display, e.g. attention plots)."""
        return self.sp.encode(text, out_type=str)

    def id_to_piece(self, index: int) -> str:
        """The piece string of one id."""
        return self.sp.id_to_piece(index)

    def normalize(self, text: str) -> str:
        """The text as the model sees it: what ``decode(encode(text))`` returns."""
        return self.sp.normalize(text).replace("\u2581", " ").strip()

    def fingerprint(self) -> str:
        """Content hash of the model (used to key caches of encoded data)."""
        import hashlib

        return hashlib.sha256(self.model_bytes).hexdigest()

    def save(self, path: str | os.PathLike) -> None:
        """Write the model file (atomically)."""
        write_bytes_atomic(path, self.model_bytes)


def train_sentencepiece(sentences: Iterable[str], cfg: TokenizerConfig) -> Tokenizer:
    """Train a SentencePiece model on ``sentences`` (stripped, non-empty lines) in memory.

    The caller samples to ``cfg.max_sentences`` beforehand (see :func:`sample_lines`), so memory
    stays bounded on large corpora.
    """
    spm.set_random_generator_seed(cfg.seed)
    with tempfile.TemporaryDirectory(prefix="nmt-spm-") as tmp:
        rule: dict[str, str] = {"normalization_rule_name": cfg.normalization}
        if cfg.normalization == NFC_RULE:
            table = Path(tmp) / "nmt_nfc.tsv"
            table.write_text(nfc_rules(), encoding="utf-8")
            rule = {"normalization_rule_tsv": str(table)}
        tokenizer = _train(sentences, cfg, rule)
    if cfg.normalization == NFC_RULE:  # the model keeps the rule, not the table's path
        tokenizer = Tokenizer(_named_rule(tokenizer.model_bytes, NFC_RULE))
    return tokenizer


def _named_rule(model: bytes, name: str) -> bytes:
    """A model trained from a rule table, with the table's (temporary) path replaced by the
    rule's name, so that equal training gives equal bytes (caches are keyed by them)."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(model)
    proto.normalizer_spec.normalization_rule_tsv = ""
    proto.normalizer_spec.name = name
    return proto.SerializeToString(deterministic=True)


def _train(sentences: Iterable[str], cfg: TokenizerConfig, rule: dict[str, str]) -> Tokenizer:
    """SentencePiece training proper, with the normalisation given as ``rule`` (name or table)."""
    buffer = io.BytesIO()
    count = 0

    def counted() -> Iterator[str]:
        nonlocal count
        for line in sentences:
            count += 1
            yield line

    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=counted(),
            model_writer=buffer,
            model_type=cfg.type,
            vocab_size=cfg.vocab_size,
            character_coverage=cfg.character_coverage,
            byte_fallback=cfg.byte_fallback,
            **rule,
            hard_vocab_limit=cfg.hard_vocab_limit,
            input_sentence_size=cfg.max_sentences,
            shuffle_input_sentence=True,
            num_threads=cfg.threads or os.cpu_count() or 1,
            pad_id=PAD_ID, unk_id=UNK_ID, bos_id=BOS_ID, eos_id=EOS_ID,
            pad_piece=PAD, unk_piece=UNK, bos_piece=BOS, eos_piece=EOS,
            max_sentence_length=1 << 16,
            train_extremely_large_corpus=False,
            minloglevel=2,
        )
    except RuntimeError as exc:
        message = str(exc)
        if count == 0:
            raise NMTError("SentencePiece training got no sentences: the training corpus has no "
                           "non-empty lines") from None
        if "smaller than required_chars" in message:
            raise ConfigError(f"tokenizer.vocab_size={cfg.vocab_size} is too small for the "
                              f"characters of this corpus ({count} sentences): raise it, or "
                              f"lower tokenizer.character_coverage ({message.strip()})") from None
        if "Vocabulary size too high" in message:
            raise ConfigError(f"tokenizer.vocab_size={cfg.vocab_size} is too large for this "
                              f"corpus ({count} sentences): lower it, or set "
                              f"tokenizer.hard_vocab_limit: false ({message.strip()})") from None
        raise NMTError(f"SentencePiece training failed on {count} sentences: {message}") from None
    if count == 0:
        raise NMTError("SentencePiece training got no sentences: the training corpus is empty")
    return Tokenizer(buffer.getvalue())


#: Characters made spaces by ``nmt_nfc``: tab, line feed, vertical tab, form feed, carriage
#: return, next line, the line and paragraph separators, and SentencePiece's own space mark.
_SPACE_LIKE = (0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x85, 0x2028, 0x2029, 0x2581)
#: Characters removed: the other C0 and C1 controls, zero-width space and byte-order mark.
#: (Zero-width joiners and direction marks stay: scripts and emoji sequences need them.)
_REMOVED = tuple(c for c in [*range(0x01, 0x20), *range(0x7F, 0xA0), 0x200B, 0xFEFF]
                 if c not in _SPACE_LIKE)


@functools.cache
def nfc_rules() -> str:
    """The ``nmt_nfc`` rule table in SentencePiece's TSV form (source code points TAB target).

    NFC as rewrites: each character NFC replaces (singletons such as the Ohm sign) maps to its
    NFC form, and each composed character's canonical decompositions (full and one step)
    map to it, so "e" + combining acute becomes "é". Then the space and control rules above.
    SentencePiece matches the longest source sequence, and stores the table in the model.
    """
    rules: dict[str, str] = {}
    for code in range(0x110000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        char = chr(code)
        composed = unicodedata.normalize("NFC", char)
        if composed != char:
            rules[char] = composed
            continue
        full = unicodedata.normalize("NFD", char)
        if full != char:
            rules.setdefault(full, char)
            step = unicodedata.decomposition(char)
            if step and not step.startswith("<"):
                one = "".join(chr(int(h, 16)) for h in step.split())
                if unicodedata.normalize("NFC", one) == char:
                    rules.setdefault(one, char)
    rules.update({chr(c): " " for c in _SPACE_LIKE})
    rules.update({chr(c): "" for c in _REMOVED})

    def hexes(text: str) -> str:
        return " ".join(f"{ord(c):X}" for c in text)

    return "".join(f"{hexes(src)}\t{hexes(dst)}\n" for src, dst in sorted(rules.items()))


def sample_lines(lines: Sequence[str], cap: int, seed: int) -> list[int]:
    """Indices of at most ``cap`` entries of ``lines``, a seeded sample in corpus order."""
    if len(lines) <= cap:
        return list(range(len(lines)))
    return sorted(random.Random(seed).sample(range(len(lines)), cap))


def load_pretrained(cfg: TokenizerConfig) -> tuple[Tokenizer, Tokenizer] | None:
    """The (source, target) tokenizers named in the config, or None when they must be trained."""
    if cfg.model:
        joint = Tokenizer(cfg.model)
        return joint, joint
    if cfg.src_model and cfg.tgt_model:
        return Tokenizer(cfg.src_model), Tokenizer(cfg.tgt_model)
    return None


def model_files(joint: bool) -> tuple[str, ...]:
    """File names of the tokenizer model(s) inside a run or model directory."""
    return (JOINT_MODEL,) if joint else (SRC_MODEL, TGT_MODEL)


def load_from_dir(directory: str | os.PathLike) -> tuple[Tokenizer, Tokenizer]:
    """The (source, target) tokenizers stored in a run or model directory."""
    directory = Path(directory)
    if (directory / JOINT_MODEL).is_file():
        joint = Tokenizer(directory / JOINT_MODEL)
        return joint, joint
    if (directory / SRC_MODEL).is_file() and (directory / TGT_MODEL).is_file():
        return Tokenizer(directory / SRC_MODEL), Tokenizer(directory / TGT_MODEL)
    raise NMTError(f"{directory}: no SentencePiece model found (expected {JOINT_MODEL}, or "
                   f"{SRC_MODEL} and {TGT_MODEL}); run nmt prepare first")


def files_fingerprint(paths: Iterable[str | os.PathLike]) -> str:
    """Combined content hash of several files."""
    return "-".join(sha256_file(p)[:16] for p in paths)
