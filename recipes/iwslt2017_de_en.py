"""IWSLT 2017 German→English (TED talks) from the Hugging Face hub (``IWSLT/iwslt2017``, config
``iwslt2017-de-en``).

About 206k training pairs, nested schema (``translation: {de, en}``). The model in
``recipes/iwslt2017_de_en.yaml`` is sized like the Stanford LSTM systems for the IWSLT spoken
language tasks (Luong & Manning, 2015): 2 encoder and 2 decoder layers of about 500 units,
general attention with input feeding (Luong, Pham & Manning, 2015), dropout 0.3. Needs the hub
(or its cache, with ``HF_HUB_OFFLINE=1``); offline it stops in stage 0 with a one-line message.

    python recipes/iwslt2017_de_en.py --out runs/iwslt2017_de_en
"""

import sys
from pathlib import Path

from nmt.pipeline.recipe import Recipe, main

HERE = Path(__file__).resolve().parent

RECIPE = Recipe(
    name="iwslt2017_de_en",
    description="IWSLT 2017 German→English TED talks (Hugging Face hub: IWSLT/iwslt2017).",
    config_file=HERE / "iwslt2017_de_en.yaml",
    data_notice="IWSLT 2017 (TED talks, CC BY-NC-ND 4.0); see the dataset card",
    cite=["M. Cettolo et al. Overview of the IWSLT 2017 Evaluation Campaign. IWSLT 2017.",
          "M.-T. Luong, C. D. Manning. Stanford Neural Machine Translation Systems for Spoken "
          "Language Domains. IWSLT 2015.",
          "M.-T. Luong, H. Pham, C. D. Manning. Effective Approaches to Attention-based Neural "
          "Machine Translation. EMNLP 2015."],
)

if __name__ == "__main__":
    sys.exit(main(RECIPE))
