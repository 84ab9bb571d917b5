"""The one home of a model or run directory's layout: every file name lives here.

A model directory (what a user moves around) holds ``config.yaml``, ``model.safetensors`` and
the SentencePiece model(s), and ``shortlist.safetensors`` (a lexical shortlist) when made. A
training run adds ``trainer_state.pt``, ``checkpoints/``,
``metrics.csv``, ``curve.png``, ``train.log`` and ``tensorboard/`` (and ``base_model.json``
when fine-tuned from another model); a recipe adds
``stages.json``, ``training.json``, the test hypotheses ``test.beamK.hyp`` with their
``test.beamK.json``, ``results.json`` and the model card ``README.md``. An ONNX export
(``nmt export``) holds ``config.yaml``, the SentencePiece model(s), ``manifest.json`` and the
graphs ``encoder.onnx`` and ``decoder_step.onnx`` (and their ``.int8.onnx`` variants), and with
a shortlist ``shortlist.safetensors``, ``decoder_step.shortlist.onnx`` and
``output_layer.safetensors``. Code asks a
:class:`RunDir` for a path instead of spelling a name::

    run = RunDir(config.out)
    save_weights(model, run.model)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

#: Version of the on-disk layout of model directories and configs written by this toolkit.
FORMAT_VERSION = 1

CONFIG_FILE = "config.yaml"
MODEL_FILE = "model.safetensors"
TRAINER_STATE_FILE = "trainer_state.pt"
CHECKPOINT_DIR = "checkpoints"
METRICS_FILE = "metrics.csv"
CURVE_FILE = "curve.png"
LOG_FILE = "train.log"
TENSORBOARD_DIR = "tensorboard"
TOKENIZER_MARKER = "tokenizer.json"
CACHE_DIR = "cache"
STAGES_FILE = "stages.json"
TRAINING_FILE = "training.json"
RESULTS_FILE = "results.json"
CARD_FILE = "README.md"
AVERAGED_FILE = "averaged.json"
BASE_MODEL_FILE = "base_model.json"
SHORTLIST_FILE = "shortlist.safetensors"
# an ONNX export (nmt export): the graphs, their int8 variants and the manifest
MANIFEST_FILE = "manifest.json"
ENCODER_ONNX = "encoder.onnx"
STEP_ONNX = "decoder_step.onnx"
ENCODER_ONNX_INT8 = "encoder.int8.onnx"
STEP_ONNX_INT8 = "decoder_step.int8.onnx"
# with a lexical shortlist: the step over a subset of the target vocabulary
STEP_SHORTLIST_ONNX = "decoder_step.shortlist.onnx"
STEP_SHORTLIST_ONNX_INT8 = "decoder_step.shortlist.int8.onnx"
# ... and the output layer's weight and bias, whose rows of a shortlist the search gathers once
OUTPUT_LAYER_FILE = "output_layer.safetensors"


@dataclass(frozen=True)
class RunDir:
    """Paths of the files of one model or run directory ``root``."""

    root: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    # -------------------------------------------------------------- the model directory
    @property
    def config(self) -> Path:
        """``config.yaml``: every setting, as trained."""
        return self.root / CONFIG_FILE

    @property
    def model(self) -> Path:
        """``model.safetensors``: the best weights."""
        return self.root / MODEL_FILE

    @property
    def shortlist(self) -> Path:
        """``shortlist.safetensors``: the lexical shortlist table (optional; an export copies
        it)."""
        return self.root / SHORTLIST_FILE

    # -------------------------------------------------------------- a training run
    @property
    def trainer_state(self) -> Path:
        """``trainer_state.pt``: optimizer, schedule, RNG and data position (resume only);
        its presence means a model has been trained here."""
        return self.root / TRAINER_STATE_FILE

    @property
    def checkpoints(self) -> Path:
        """``checkpoints/``: the weights of the last validations."""
        return self.root / CHECKPOINT_DIR

    def checkpoint(self, step: int) -> Path:
        """The checkpoint of update ``step`` (zero-padded, so names sort by step)."""
        return self.checkpoints / f"step-{step:08d}.safetensors"

    def checkpoint_files(self) -> list[Path]:
        """The checkpoints present, oldest first."""
        return sorted(self.checkpoints.glob("step-*.safetensors"))

    @property
    def metrics(self) -> Path:
        """``metrics.csv``: one row per validation."""
        return self.root / METRICS_FILE

    @property
    def curve(self) -> Path:
        """``curve.png``: the learning curve."""
        return self.root / CURVE_FILE

    @property
    def log(self) -> Path:
        """``train.log``: the training log at INFO level."""
        return self.root / LOG_FILE

    @property
    def tensorboard(self) -> Path:
        """``tensorboard/``: TensorBoard event files."""
        return self.root / TENSORBOARD_DIR

    @property
    def tokenizer_marker(self) -> Path:
        """``tokenizer.json``: how the SentencePiece model(s) here were made."""
        return self.root / TOKENIZER_MARKER

    @property
    def cache(self) -> Path:
        """``cache/``: the default home of the Arrow caches (``data.cache_dir`` overrides)."""
        return self.root / CACHE_DIR

    # -------------------------------------------------------------- a recipe run
    @property
    def stages(self) -> Path:
        """``stages.json``: each recipe stage's wall time and summary."""
        return self.root / STAGES_FILE

    @property
    def training(self) -> Path:
        """``training.json``: the training stage's figures (its presence marks it done)."""
        return self.root / TRAINING_FILE

    @property
    def results(self) -> Path:
        """``results.json``: scores, figures, hardware and config of a recipe run."""
        return self.root / RESULTS_FILE

    @property
    def card(self) -> Path:
        """``README.md``: the model card."""
        return self.root / CARD_FILE

    @property
    def base_model(self) -> Path:
        """``base_model.json``: the model a fine-tuning run started from (path, name, hash)."""
        return self.root / BASE_MODEL_FILE

    @property
    def averaged(self) -> Path:
        """``averaged.json``: which checkpoints an averaged model directory came from."""
        return self.root / AVERAGED_FILE

    def hypotheses(self, split: str, beam: int) -> Path:
        """``SPLIT.beamK.hyp``: translations of a split with beam size K."""
        return self.root / f"{split}.beam{beam}.hyp"

    def hypotheses_meta(self, split: str, beam: int) -> Path:
        """``SPLIT.beamK.json``: what made those translations (weights, settings, speed)."""
        return self.root / f"{split}.beam{beam}.json"

    @property
    def manifest(self) -> Path:
        """``manifest.json`` of an ONNX export: graphs, shapes, versions and file hashes."""
        return self.root / MANIFEST_FILE

    def is_onnx_export(self) -> bool:
        """Whether this directory is an ONNX export (it has a ``manifest.json``)."""
        return self.manifest.is_file()

    def has_training_state(self) -> bool:
        """Whether training has run here (a trainer state exists: ``--resume`` can go on)."""
        return self.trainer_state.exists()

    def holds_trained_model(self) -> bool:
        """Whether trained weights are here (a trainer state or ``model.safetensors``): the
        directory's ``config.yaml`` then describes them and is never rewritten."""
        return self.has_training_state() or self.model.exists()
