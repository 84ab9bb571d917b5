"""Shared fixtures: small parallel corpora made on the fly (no corpus from outside)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

# Real sentences in the scripts the tokenizer must round-trip.
REAL_LINES = [
    "Die Größe des Fensters lässt sich über das Menü „Ansicht“ ändern.",
    "Wählen Sie Extras – Optionen – LibreOffice Writer – Formatierungshilfen.",
    "El niño pequeño comió piña y jamón en la cañada, ¿verdad?",
    "Señor, ¡qué día más lluvioso! Añadió azúcar al café.",
    "这是一个用于测试的中文句子。",
    "日本語の文章もちゃんと扱えます。",
    "Great job 🎉👍 see you soon 😀",
    "Ünïcödé ﬁ ligature and ｆｕｌｌｗｉｄｔｈ letters.",
]

_WORDS_EN = ("the house is small and green we see a big red tree near old water one two three "
             "open file menu window help table chart format cell").split()
_WORDS_DE = ("das Haus ist klein und grün wir sehen einen großen roten Baum nahe altes Wasser "
             "eins zwei drei öffnen Datei Menü Fenster Hilfe Tabelle Diagramm Format Zelle").split()


def make_pairs(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """``n`` synthetic (English-like, German-like) pairs of 2-12 words."""
    rng = random.Random(seed)
    pairs = []
    for _ in range(n):
        k = rng.randint(2, 12)
        idx = [rng.randrange(len(_WORDS_EN)) for _ in range(k)]
        pairs.append((" ".join(_WORDS_EN[i] for i in idx), " ".join(_WORDS_DE[i] for i in idx)))
    return pairs


def write_text_corpus(prefix: Path, pairs: list[tuple[str, str]], src: str = "en",
                      tgt: str = "de") -> Path:
    """Write PREFIX.SRC and PREFIX.TGT line-aligned files; returns the prefix."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    Path(f"{prefix}.{src}").write_text("".join(p[0] + "\n" for p in pairs), encoding="utf-8")
    Path(f"{prefix}.{tgt}").write_text("".join(p[1] + "\n" for p in pairs), encoding="utf-8")
    return prefix


@pytest.fixture
def text_corpus(tmp_path: Path) -> dict[str, Path]:
    """train/valid/test prefixes of a synthetic en-de corpus in tmp_path/corpus."""
    return {split: write_text_corpus(tmp_path / "corpus" / split, make_pairs(n, seed))
            for split, n, seed in (("train", 400, 0), ("valid", 30, 1), ("test", 40, 2))}


def small_overrides(out: Path, corpus: dict[str, Path]) -> list[str]:
    """Config overrides for a fast prepare on the synthetic corpus."""
    return [f"output_dir={out}", "data.format=text", f"data.train={corpus['train']}",
            f"data.valid={corpus['valid']}", f"data.test={corpus['test']}",
            "tokenizer.vocab_size=400", "tokenizer.hard_vocab_limit=false"]


def write_reverse_task(directory: Path, sizes: dict[str, int], min_len: int = 3,
                       max_len: int = 8, symbols: str = "abcdefgh",
                       copy: bool = False) -> dict[str, Path]:
    """Reverse-the-sequence task (or, with ``copy``, the copy task) as text files ``SPLIT.src`` /
    ``SPLIT.tgt``; returns the prefixes."""
    prefixes = {}
    for offset, (split, n) in enumerate(sizes.items()):
        rng = random.Random(100 + offset)
        pairs = []
        for _ in range(n):
            seq = [rng.choice(symbols) for _ in range(rng.randint(min_len, max_len))]
            pairs.append((" ".join(seq), " ".join(seq if copy else reversed(seq))))
        prefixes[split] = write_text_corpus(directory / split, pairs, "src", "tgt")
    return prefixes


def reverse_overrides(out: Path, prefixes: dict[str, Path]) -> list[str]:
    """Config overrides for a tiny model on the reverse task (trains in seconds)."""
    return [f"output_dir={out}", "data.src_lang=src", "data.tgt_lang=tgt",
            f"data.train={prefixes['train']}",
            *(f"data.{s}={prefixes[s]}" for s in ("valid", "test") if s in prefixes),
            "tokenizer.vocab_size=16", "tokenizer.byte_fallback=false",
            "tokenizer.hard_vocab_limit=false", "model.embed_size=32", "model.hidden_size=64",
            "model.decoder_hidden_size=128", "model.dropout=0.0", "training.batch_tokens=800",
            "training.lr=0.005", "training.schedule=constant", "training.label_smoothing=0.0",
            "training.log_every=50", "decoding.max_len_a=1.0", "decoding.max_len_b=2"]
