"""Fine-tuning (``training.init_from``): the base model's weights and tokenizer start a new run
with a fresh optimizer; shapes that differ are refused; the run resumes exactly and names its
base in ``base_model.json``."""

import json
import shutil
import subprocess
import sys

import pytest
import torch
from conftest import exact_match, reverse_overrides, write_reverse_task

from nmt.config import load_config
from nmt.errors import ConfigError, NMTError
from nmt.fileio import sha256_file
from nmt.models.weights import read_weights
from nmt.training.trainer import Trainer


@pytest.fixture(scope="module")
def copy_task(tmp_path_factory):
    """Another task over the reverse task's symbols: the 'new domain' to fine-tune on."""
    return write_reverse_task(tmp_path_factory.mktemp("copy") / "data",
                              {"train": 600, "valid": 50, "test": 100}, copy=True)


def finetune_config(out, base, task, *extra):
    return load_config(None, [*reverse_overrides(out, task), f"training.init_from={base}",
                              "training.valid_every=10", *extra])


def test_a_fine_tuning_run_starts_from_the_base_weights_and_tokenizer(tmp_path, trained_reverse,
                                                                       copy_task):
    # the config asks for another tokenizer: the base's replaces it (sampling keys stay)
    config = finetune_config(tmp_path / "ft", trained_reverse, copy_task,
                             "tokenizer.vocab_size=40", "tokenizer.sample_alpha=0.3",
                             "training.max_steps=10", "training.log_every=5")
    trainer = Trainer(config, quiet=True)
    base = read_weights(trained_reverse / "model.safetensors")
    state = trainer.model.state_dict()
    for name, tensor in base.items():
        assert torch.equal(state[name], tensor), name
    assert (tmp_path / "ft" / "spm.model").read_bytes() == \
        (trained_reverse / "spm.model").read_bytes()
    assert config.tokenizer.vocab_size == load_config(trained_reverse / "config.yaml") \
        .tokenizer.vocab_size and config.tokenizer.sample_alpha == 0.3
    assert all(not s for s in trainer.optimizer.state.values())  # a fresh optimizer
    trainer.fit()
    record = json.loads((tmp_path / "ft" / "base_model.json").read_text(encoding="utf-8"))
    assert record["weights_sha256"] == sha256_file(trained_reverse / "model.safetensors")
    assert record["path"] == str(trained_reverse)
    log = (tmp_path / "ft" / "train.log").read_text(encoding="utf-8")
    assert "fine-tuning from" in log
    assert ("budget: at most 20 epochs (training.max_epochs) or 10 updates (training.max_steps), "
            "whichever comes first") in log
    assert "training ends in about 0 minutes (training.max_steps), after about 10 updates" in log
    saved = load_config(tmp_path / "ft" / "config.yaml")
    assert saved.tokenizer.vocab_size == config.tokenizer.vocab_size


def test_fine_tuning_keeps_what_the_base_learned(tmp_path, trained_reverse, reverse_task):
    """Twenty updates at a low rate: from the base the model still reverses (the base reaches
    0.95 or more), where twenty updates from scratch reach nothing near it."""
    config = finetune_config(tmp_path / "ft", trained_reverse, reverse_task,
                             "training.max_steps=20", "training.lr=0.0002")
    Trainer(config, quiet=True).fit()
    assert exact_match(tmp_path / "ft", reverse_task["test"]) >= 0.9
    scratch = load_config(None, [*reverse_overrides(tmp_path / "s", reverse_task),
                                 "training.max_steps=20", "training.valid_every=10"])
    Trainer(scratch, quiet=True).fit()
    assert exact_match(tmp_path / "s", reverse_task["test"]) < 0.5


def test_a_fine_tuning_run_resumes_exactly_without_its_base(tmp_path, trained_reverse,
                                                            copy_task):
    base = tmp_path / "base"
    shutil.copytree(trained_reverse, base)

    def run(out, steps, resume=False):
        # the config's own tokenizer section differs from the base's: the base's is taken,
        # from the base when the run starts and from the run's config.yaml when it resumes
        config = finetune_config(out, base, copy_task, f"training.max_steps={steps}",
                                 "training.precision=fp32", "model.dropout=0.2",
                                 "tokenizer.sample_alpha=0.3", "tokenizer.vocab_size=40")
        trainer = Trainer(config, resume=resume, quiet=True)
        trainer.fit()
        return trainer

    straight = run(tmp_path / "a", 30)
    run(tmp_path / "b", 20)
    shutil.rmtree(base)  # the run copied what it needs when it started
    resumed = run(tmp_path / "b", 30, resume=True)
    assert resumed.progress.step == 30
    for name, value in straight.model.state_dict().items():
        assert torch.equal(value, resumed.model.state_dict()[name]), name
    # a run from scratch cannot be resumed as a fine-tuning run (nor the other way round)
    scratch = load_config(None, [*reverse_overrides(tmp_path / "s", copy_task),
                                 "training.max_steps=5"])
    Trainer(scratch, quiet=True).fit()
    with pytest.raises(NMTError, match="was trained from scratch"):
        Trainer(finetune_config(tmp_path / "s", trained_reverse, copy_task), resume=True,
                quiet=True)
    assert (tmp_path / "s" / "tokenizer.json").read_text(encoding="utf-8").find("init_from") < 0


def test_other_shapes_are_refused_with_the_keys_to_set(tmp_path, trained_reverse, copy_task):
    config = finetune_config(tmp_path / "ft", trained_reverse, copy_task,
                             "model.decoder_hidden_size=64", "model.tie_embeddings=false",
                             "model.copy_attention=true")
    with pytest.raises(ConfigError) as caught:
        Trainer(config, quiet=True)
    message = str(caught.value)
    assert "decoder_hidden_size 64 (base 128)" in message
    assert "model.decoder_hidden_size=128 model.copy_attention=false" in message
    assert "tie_embeddings" not in message  # both untied
    assert not (tmp_path / "ft" / "spm.model").exists()  # refused before anything is written


def test_what_is_not_a_trained_model_is_refused(tmp_path, copy_task, trained_reverse):
    with pytest.raises(ConfigError, match="not a trained model directory"):
        Trainer(finetune_config(tmp_path / "a", tmp_path / "nowhere", copy_task), quiet=True)
    export = tmp_path / "export"
    export.mkdir()
    shutil.copy(trained_reverse / "config.yaml", export / "config.yaml")
    (export / "manifest.json").write_text("{}", encoding="utf-8")
    with pytest.raises(ConfigError, match="ONNX export"):
        Trainer(finetune_config(tmp_path / "b", export, copy_task), quiet=True)
    with pytest.raises(ConfigError, match="drop tokenizer.model"):
        Trainer(finetune_config(tmp_path / "c", trained_reverse, copy_task,
                                f"tokenizer.model={trained_reverse / 'spm.model'}"), quiet=True)


def test_nmt_train_init_from_gives_one_line_and_exit_2_on_a_mismatch(tmp_path, trained_reverse,
                                                                     copy_task):
    proc = subprocess.run([sys.executable, "-m", "nmt", "train", "-q", "--init-from",
                           str(trained_reverse), *reverse_overrides(tmp_path / "ft", copy_task),
                           "model.hidden_size=32"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "model.hidden_size=64" in proc.stderr
