"""WMT16 German→English news from the Hugging Face hub (``wmt/wmt16``, config ``de-en``).

About 4.5M training pairs (Europarl, Common Crawl, News Commentary), validation newstest2015,
test newstest2016, nested schema (``translation: {de, en}``). The model in
``recipes/wmt16_de_en.yaml`` is sized like the attention LSTMs of Luong, Pham & Manning (2015)
on WMT English-German (stacked LSTMs of 1000 units, general attention, input feeding, dropout
0.2) with a bidirectional 2-layer encoder of 2 x 512 as in the Edinburgh WMT16 systems
(Sennrich, Haddow & Birch, 2016). Meant for a GPU (``training.device=cuda``); needs the hub (or
its cache, with ``HF_HUB_OFFLINE=1``); offline it stops in stage 0 with a one-line message.

    python recipes/wmt16_de_en.py --out runs/wmt16_de_en
"""

import sys
from pathlib import Path

from nmt.pipeline.recipe import Recipe, main

HERE = Path(__file__).resolve().parent

RECIPE = Recipe(
    name="wmt16_de_en",
    description="WMT16 German→English news (Hugging Face hub: wmt/wmt16, de-en).",
    config_file=HERE / "wmt16_de_en.yaml",
    data_notice="WMT16 training data; see the dataset card of wmt/wmt16 for each corpus' terms",
    cite=["O. Bojar et al. Findings of the 2016 Conference on Machine Translation. WMT 2016.",
          "M.-T. Luong, H. Pham, C. D. Manning. Effective Approaches to Attention-based Neural "
          "Machine Translation. EMNLP 2015.",
          "R. Sennrich, B. Haddow, A. Birch. Edinburgh Neural Machine Translation Systems for "
          "WMT 16. WMT 2016."],
)

if __name__ == "__main__":
    sys.exit(main(RECIPE))
