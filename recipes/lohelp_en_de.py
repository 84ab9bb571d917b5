"""LibreOffice help English→German: the embedded default recipe, offline, about 30 minutes on 2 CPU
cores.

The corpus ships with the project (``recipes/data/lohelp-en-de.tar.xz``, 32,069 / 718 / 2,378
segment pairs, MPL-2.0, see ``recipes/data/NOTICE.md``); stage 0 unpacks it once and loads it
through Hugging Face ``datasets`` like any local corpus. The config is
``recipes/lohelp_en_de.yaml``: a 1-layer BiLSTM (256 per direction) and a 256-unit LSTM decoder
with general (Luong) attention and its output projection tied to the target embedding,
SentencePiece unigram 8k joint, trained for 30 minutes on a cosine schedule.

    python recipes/lohelp_en_de.py                        # all stages into runs/lohelp_en_de
    python recipes/lohelp_en_de.py --stage 3 --out runs/x  # translate and score again
    python recipes/lohelp_en_de.py training.max_minutes=5 --out runs/quick
"""

import sys
from pathlib import Path

from nmt.pipeline.recipe import Recipe, main, unpack

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "data" / "lohelp-en-de"


def fetch(config, args) -> None:
    """Unpack the shipped archive beside it (once)."""
    unpack(HERE / "data" / "lohelp-en-de.tar.xz", CORPUS)


RECIPE = Recipe(
    name="lohelp_en_de",
    description="LibreOffice help English→German (shipped corpus, runs offline).",
    config_file=HERE / "lohelp_en_de.yaml",
    data_notice="LibreOffice help texts, Mozilla Public License 2.0 (recipes/data/NOTICE.md)",
    values=lambda args: {"data": {s: str(CORPUS / s) for s in ("train", "valid", "test")}},
    fetch=fetch,
    cite=["M.-T. Luong, H. Pham, C. D. Manning. Effective Approaches to Attention-based Neural "
          "Machine Translation. EMNLP 2015 (general attention)."],
)

if __name__ == "__main__":
    sys.exit(main(RECIPE))
