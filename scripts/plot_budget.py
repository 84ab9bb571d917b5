"""The budget curve: test BLEU of one recipe against its training minutes.

Each run is a recipe output directory (``python recipes/lohelp_en_de.py --out DIR
training.max_minutes=M ...``); its ``results.json`` gives the test scores, the updates, the
epochs and the minutes trained. The plot has test BLEU (and chrF on a second axis) against
training minutes; ``--json`` writes the table too, and the Markdown table is printed.

    python scripts/plot_budget.py runs/m15 runs/m30 runs/m60 -o docs/benchmarks/budget.png \\
        [--json budget.json] [--title "lohelp_en_de, bf16, AMD EPYC (Zen 5)"]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from nmt.fileio import atomic_write, write_text_atomic


def point(run: Path) -> dict[str, object]:
    """One run's row: minutes, updates, epochs, tokens/s, best valid BLEU and test scores."""
    path = run / "results.json"
    if not path.is_file():
        raise SystemExit(f"plot_budget.py: {path} does not exist: run the recipe to the score "
                         "stage first")
    results = json.loads(path.read_text(encoding="utf-8"))
    training, test = results["training"], results["test"]
    decoding = results.get("translation", {}).get("decoding", {})
    return {"run": str(run), "minutes": round(training["seconds"] / 60, 1),
            "updates": training["steps"], "epochs": training["epochs"],
            "tokens_per_s": training.get("target_tokens_per_s"),
            "best_valid_bleu": training.get("best_valid_bleu"),
            "test_bleu": test["bleu"], "test_chrf": test["chrf"],
            "decoding": decoding, "precision": training.get("precision"),
            "cpu": results["hardware"]["cpu"]}


def plot(rows: list[dict[str, object]], out: Path, title: str) -> None:
    """Write the PNG: test BLEU and chrF against training minutes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [r["minutes"] for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    ax.plot(minutes, [r["test_bleu"] for r in rows], color="tab:red", marker="o",
            label="test BLEU")
    for r in rows:
        ax.annotate(f"{r['test_bleu']:.2f}", (r["minutes"], r["test_bleu"]),
                    textcoords="offset points", xytext=(0, 6), ha="center", fontsize=8)
    ax.set_xlabel("training minutes")
    ax.set_ylabel("test BLEU")
    chrf = ax.twinx()
    chrf.plot(minutes, [r["test_chrf"] for r in rows], color="tab:blue", marker="s",
              linestyle="--", label="test chrF")
    chrf.set_ylabel("test chrF")
    fig.legend(loc="lower right", bbox_to_anchor=(0.85, 0.2))
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    with atomic_write(out, "wb") as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)


def table(rows: list[dict[str, object]]) -> str:
    """The Markdown table of the points."""
    lines = ["| minutes | updates | epochs | tokens/s | best valid BLEU | test BLEU | test chrF |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        valid = f"{r['best_valid_bleu']:.2f}" if r["best_valid_bleu"] is not None else "–"
        lines.append(f"| {r['minutes']} | {r['updates']:,} | {r['epochs']} | "
                     f"{r['tokens_per_s'] or '–'} | {valid} | {r['test_bleu']:.2f} | "
                     f"{r['test_chrf']:.2f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="recipe output directories")
    parser.add_argument("-o", "--out", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--json", type=Path, help="also write the points as JSON")
    parser.add_argument("--title", default="", help="plot title (default: recipe and CPU)")
    args = parser.parse_args(argv)
    rows = sorted((point(run) for run in args.runs), key=lambda r: r["minutes"])
    # one search and one precision for every point, or the curve mixes two things
    for key in ("decoding", "precision"):
        seen = {json.dumps(r[key], sort_keys=True) for r in rows}
        if len(seen) > 1:
            raise SystemExit(f"plot_budget.py: the runs differ in {key} "
                             f"({' / '.join(sorted(seen))}): re-run their translate stage "
                             "with one setting")
    title = args.title or f"test BLEU against training minutes ({rows[0]['cpu']}, " \
                          f"{rows[0]['precision']})"
    plot(rows, args.out, title)
    if args.json:
        write_text_atomic(args.json, json.dumps(rows, indent=2) + "\n")
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
