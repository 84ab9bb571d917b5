"""Corpus preparation at growing sizes: peak memory stays flat, time grows about linearly.

Makes 1x, 4x and 16x copies of a training corpus (default: the shipped LibreOffice help
corpus, 32k pairs -> 32k, 128k, 512k), then runs ``nmt.data.prepare.prepare`` on each in its own
process: load through ``datasets`` (Arrow on disk), SentencePiece on a bounded sample
(``tokenizer.max_sentences``, the same for every size), tokenise and clean every split into
Arrow caches. Reports wall time, peak RSS and peak anonymous RSS (without the file-backed pages
of memory-mapped Arrow files) per size, and the ratios against 1x.

    python scripts/bench_prepare_scale.py [--corpus DIR] [--scales 1,4,16] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchlib import peak_rss_mb, run_child, warn_if_busy

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = ROOT / "recipes" / "data" / "lohelp-en-de"
SETTINGS = ["data.format=text", "data.src_lang=en", "data.tgt_lang=de",
            "tokenizer.vocab_size=8000", "tokenizer.max_sentences=50000"]


def make_copies(corpus: Path, scale: int, target: Path) -> None:
    """TARGET/train.{en,de}: ``scale`` copies of the corpus' training files, written in blocks;
    valid and test as they are."""
    target.mkdir(parents=True, exist_ok=True)
    for lang in ("en", "de"):
        with open(target / f"train.{lang}", "wb") as out:
            for _ in range(scale):
                with open(corpus / f"train.{lang}", "rb") as src:
                    shutil.copyfileobj(src, out, 1 << 20)
        for split in ("valid", "test"):
            shutil.copy(corpus / f"{split}.{lang}", target / f"{split}.{lang}")


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class AnonPeak:
    """Peak anonymous resident memory (RssAnon), sampled every 20 ms in a thread.

    ``ru_maxrss`` also counts file-backed pages of the memory-mapped Arrow files that were
    read: the kernel drops those under pressure, so they are not memory the process needs.
    """

    def __init__(self) -> None:
        import threading

        self.peak_kb, self._stop = _status_kb("RssAnon"), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.peak_kb = max(self.peak_kb, _status_kb("RssAnon"))

    def stop(self) -> float:
        """Stop sampling; the peak in MB."""
        self._stop.set()
        self._thread.join()
        return max(self.peak_kb, _status_kb("RssAnon")) / 1024.0


def child(data: Path, out: Path) -> None:
    """Prepare one corpus in this process and print its figures as JSON."""
    from nmt.config import load_config
    from nmt.data.prepare import prepare

    anon = AnonPeak()

    config = load_config(None, [*SETTINGS, f"output_dir={out}", f"data.train={data}/train",
                                f"data.valid={data}/valid", f"data.test={data}/test"])
    start = time.perf_counter()
    prepared = prepare(config)
    seconds = time.perf_counter() - start
    print(json.dumps({"pairs": prepared.stats["train"].total, "seconds": seconds,
                      "peak_rss_mb": peak_rss_mb(), "peak_anon_mb": anon.stop()}))


def main() -> None:
    """Copies, one child process per scale, a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS,
                        help="folder with train/valid/test.{en,de}")
    parser.add_argument("--scales", default="1,4,16", help="copies of the training set")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    parser.add_argument("--child", nargs=2, metavar=("DATA", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), Path(args.child[1]))
        return
    if not (args.corpus / "train.en").is_file():
        parser.error(f"{args.corpus}/train.en not found (unpack recipes/data/lohelp-en-de.tar.xz "
                     "into recipes/data, or give --corpus)")
    load = warn_if_busy()
    rows = []
    with tempfile.TemporaryDirectory(prefix="nmt-scale-") as tmp:
        for scale in [int(s) for s in args.scales.split(",")]:
            data, out = Path(tmp) / f"x{scale}", Path(tmp) / f"run{scale}"
            make_copies(args.corpus, scale, data)
            figures = run_child([sys.executable, __file__, "--child", str(data), str(out)],
                                f"{scale}x")
            rows.append({"scale": scale, **figures})
            print(f"{scale}x: {figures['pairs']:,} pairs, {figures['seconds']:.1f} s, "
                  f"peak RSS {figures['peak_rss_mb']:.0f} MB, peak anonymous "
                  f"{figures['peak_anon_mb']:.0f} MB", flush=True)
            shutil.rmtree(data)
            shutil.rmtree(out)
    base = rows[0]
    print("\n| corpus | training pairs | prepare time | time vs 1x | peak RSS | RSS vs 1x | "
          "peak anonymous RSS | anonymous vs 1x |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['scale']}x | {row['pairs']:,} | {row['seconds']:.1f} s | "
              f"{row['seconds'] / base['seconds']:.2f}x | {row['peak_rss_mb']:.0f} MB | "
              f"{row['peak_rss_mb'] / base['peak_rss_mb']:.2f}x | "
              f"{row['peak_anon_mb']:.0f} MB | {row['peak_anon_mb'] / base['peak_anon_mb']:.2f}x |")
    if args.json:
        args.json.write_text(json.dumps({"load_before": load, "settings": SETTINGS,
                                         "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
