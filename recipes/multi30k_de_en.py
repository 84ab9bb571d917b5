"""Multi30k German→English from the Hugging Face hub (``bentrevett/multi30k``).

29,000 / 1,014 / 1,000 image-caption pairs (flat columns ``de`` and ``en``). The model in
``recipes/multi30k_de_en.yaml`` is sized like the attention model of Ben Trevett's
pytorch-seq2seq tutorials (embeddings 256, a bidirectional encoder of 2 x 256 = 512, a 512-unit
decoder, additive attention, dropout 0.5), which follow Bahdanau et al. (2015), with LSTMs as
this toolkit uses. Needs the hub (or its cache, with ``HF_HUB_OFFLINE=1``); offline it stops in
stage 0 with a one-line message.

    python recipes/multi30k_de_en.py --out runs/multi30k_de_en
"""

import sys
from pathlib import Path

from nmt.pipeline.recipe import Recipe, main

HERE = Path(__file__).resolve().parent

RECIPE = Recipe(
    name="multi30k_de_en",
    description="Multi30k German→English (Hugging Face hub: bentrevett/multi30k).",
    config_file=HERE / "multi30k_de_en.yaml",
    data_notice="Multi30k (Elliott et al., 2016); see the dataset card of bentrevett/multi30k",
    cite=["D. Elliott, S. Frank, K. Sima'an, L. Specia. Multi30K: Multilingual English-German "
          "Image Descriptions. VL workshop 2016.",
          "D. Bahdanau, K. Cho, Y. Bengio. Neural Machine Translation by Jointly Learning to "
          "Align and Translate. ICLR 2015.",
          "B. Trevett. pytorch-seq2seq tutorials 1-3, github.com/bentrevett/pytorch-seq2seq."],
)

if __name__ == "__main__":
    sys.exit(main(RECIPE))
