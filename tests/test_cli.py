"""Command line: fast help without heavy imports, prepare end to end, one-line user errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import small_overrides

from nmt.cli import main


def run(*args, **kw):
    return subprocess.run([sys.executable, "-m", "nmt", *args], capture_output=True, text=True,
                          timeout=120, **kw)


@pytest.mark.parametrize("argv", [["--help"], ["translate", "--help"], ["prepare", "--help"],
                                  ["train", "--help"], ["evaluate", "--help"]])
def test_help_does_not_import_torch_or_datasets(argv):
    code = (f"import sys\nfrom nmt.cli import main\ntry:\n    main({argv!r})\n"
            "except SystemExit:\n    pass\n"
            "print('HEAVY', sorted(m for m in ('torch', 'datasets', 'sentencepiece') "
            "if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "usage: nmt" in proc.stdout
    assert proc.stdout.strip().endswith("HEAVY []")


def test_every_subcommand_is_listed():
    proc = run("--help")
    listed = {line.split()[0] for line in proc.stdout.splitlines()
              if line.startswith("    ") and line.split()}
    assert {"prepare", "train", "translate", "evaluate"} <= listed


@pytest.mark.slow
def test_prepare_end_to_end(tmp_path, text_corpus):
    out = tmp_path / "run"
    proc = run("prepare", "-q", *small_overrides(out, text_corpus))
    assert proc.returncode == 0, proc.stderr
    assert "train: 400/400 pairs kept" in proc.stdout
    assert "vocabulary:" in proc.stdout and "tokens per sentence" in proc.stdout
    assert (out / "spm.model").is_file() and (out / "config.yaml").is_file()


@pytest.mark.slow
def test_config_typo_is_one_line_with_the_closest_key(tmp_path):
    (tmp_path / "run.yaml").write_text("model:\n  hiden_size: 64\n", encoding="utf-8")
    proc = run("prepare", "--config", str(tmp_path / "run.yaml"))
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "nmt prepare: error: unknown config key 'model.hiden_size'; did you mean "
        "'hidden_size'? (valid keys here: embed_size, hidden_size, encoder_layers, "
        "decoder_hidden_size, decoder_layers, attention, bridge, input_feeding, tie_embeddings, "
        "copy_attention, dropout, init, word_dropout)")


@pytest.mark.parametrize("argv, expected", [
    (["prepare", "--bogus"], "unrecognized arguments: --bogus"),
    (["prepare", "decoding.beam_size=0"], "decoding.beam_size: must be at least 1, got 0"),
    (["prepare", "data.train=/nonexistent/corpus"], "source file not found"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_user_errors_are_one_line_exit_2(argv, expected, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default output_dir is relative
    with pytest.raises(SystemExit) as info:
        sys.exit(main(argv))
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1 and "Traceback" not in err


@pytest.mark.slow
def test_evaluate_scores_and_checks_line_counts(tmp_path):
    ref = ["the cat sat on the mat", "a dog barks loudly", "hello world"]
    (tmp_path / "ref.txt").write_text("\n".join(ref) + "\n", encoding="utf-8")
    (tmp_path / "hyp.txt").write_text("\n".join(ref) + "\n", encoding="utf-8")
    proc = run("evaluate", "--hyp", str(tmp_path / "hyp.txt"), "--ref", str(tmp_path / "ref.txt"),
               "--json")
    assert proc.returncode == 0, proc.stderr
    scores = json.loads(proc.stdout)
    assert scores["bleu"] == pytest.approx(100.0) and scores["chrf"] == pytest.approx(100.0)
    assert scores["ter"] == pytest.approx(0.0) and "nrefs:1" in scores["bleu_signature"]
    (tmp_path / "bad.txt").write_text("only one line\n", encoding="utf-8")
    proc = run("evaluate", "--hyp", str(tmp_path / "bad.txt"), "--ref", str(tmp_path / "ref.txt"))
    assert proc.returncode == 2
    assert "bad.txt has 1 lines but" in proc.stderr and "has 3" in proc.stderr


@pytest.mark.slow
def test_language_flags_are_strings_not_yaml(tmp_path):
    from conftest import make_pairs, write_text_corpus

    prefix = write_text_corpus(tmp_path / "c" / "train", make_pairs(200), "no", "en")
    proc = run("prepare", "-q", "--src-lang", "no", "--tgt-lang", "en", "--output-dir",
               str(tmp_path / "run"), f"data.train={prefix}", "tokenizer.vocab_size=400",
               "tokenizer.hard_vocab_limit=false")
    assert proc.returncode == 0, proc.stderr
    assert "src_lang: 'no'" in (tmp_path / "run" / "config.yaml").read_text(encoding="utf-8")
    # the prepare stage also makes the lexical shortlist of the training data
    from nmt.data.shortlist import Shortlist
    from nmt.data.tokenizer import load_from_dir

    size = load_from_dir(tmp_path / "run")[0].vocab_size
    table = Shortlist.load(tmp_path / "run" / "shortlist.safetensors", size, size)
    assert table.joint and int(table.candidates.count_nonzero()) > 0


@pytest.mark.slow
def test_evaluate_picks_a_tokenizer_for_unspaced_scripts(tmp_path):
    (tmp_path / "ref.txt").write_text("我喜欢猫。\n", encoding="utf-8")
    (tmp_path / "hyp.txt").write_text("我喜欢狗。\n", encoding="utf-8")
    args = ["evaluate", "--hyp", str(tmp_path / "hyp.txt"), "--ref", str(tmp_path / "ref.txt"),
            "--json"]
    zh = json.loads(run(*args, "--lang", "zh").stdout)
    plain = json.loads(run(*args).stdout)
    assert "tok:zh" in zh["bleu_signature"] and "tok:13a" in plain["bleu_signature"]
    assert plain["bleu"] == 0.0 < zh["bleu"]  # 13a sees one word per sentence


@pytest.mark.parametrize("trained", ["model.safetensors", "trainer_state.pt"])
def test_prepare_refuses_a_directory_that_holds_a_trained_model(trained, tmp_path, text_corpus,
                                                                capsys):
    out = tmp_path / "run"
    out.mkdir()
    (out / trained).write_bytes(b"weights")
    (out / "config.yaml").write_text("output_dir: as trained\n", encoding="utf-8")
    assert main(["prepare", "-q", *small_overrides(out, text_corpus)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "choose a new output_dir" in err, err
    # refused before anything was written: the config still describes the weights
    assert (out / "config.yaml").read_text(encoding="utf-8") == "output_dir: as trained\n"
    assert sorted(p.name for p in out.iterdir()) == sorted(["config.yaml", trained])


def test_train_without_validation_says_so_instead_of_a_bleu(tmp_path, capsys):
    import datasets
    from conftest import reverse_overrides, write_reverse_task

    # a saved dataset without a validation split: formerly reported "best validation BLEU -2.3"
    prefixes = write_reverse_task(tmp_path / "text", {"train": 200})
    lines = {side: Path(f"{prefixes['train']}.{side}").read_text(encoding="utf-8").splitlines()
             for side in ("src", "tgt")}
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(lines)}).save_to_disk(
        str(tmp_path / "saved"))
    overrides = [o for o in reverse_overrides(tmp_path / "run", prefixes)
                 if not o.startswith("data.train=")]
    code = main(["train", "-q", *overrides, "data.format=disk",
                 f"data.dataset={tmp_path / 'saved'}", "training.max_steps=4"])
    assert code == 0
    out = capsys.readouterr().out
    assert "no validation set was scored" in out and "best validation BLEU" not in out, out


# every decoding flag with values on both sides of its limits
DECODING_VALUES = {
    "beam_size": ["-1", "0", "1", "5"],
    "length_penalty": ["-1", "-0.5", "0", "0.6", "nan", "inf"],
    "word_reward": ["-0.5", "0", "0.3", "nan", "-inf"],
    "max_len_a": ["-1", "0", "1.5"],
    "max_len_b": ["-1", "0", "3"],
    "batch_tokens": ["0", "1", "100"],
    "long_lines": ["split", "truncate", "drop"],
    "stopping": ["early", "exact", "never"],
    "n_best": ["0", "1", "3"],
}


@pytest.mark.parametrize("key, value", [(k, v) for k, values in DECODING_VALUES.items()
                                        for v in values])
def test_the_command_line_and_the_config_accept_the_same_decoding_values(key, value, capsys):
    """A decoding value is refused by nmt translate's flag exactly when the config refuses it
    (both are checked by DecodingConfig); a flag that passes reaches the model loading."""
    from nmt.config import load_config
    from nmt.errors import ConfigError

    try:
        load_config(None, [f"decoding.{key}={value}"])
        config_ok = True
    except ConfigError:
        config_ok = False
    flag = "--" + key.replace("_", "-")
    try:
        code = main(["translate", "-m", "/nonexistent/model", f"{flag}={value}"])
    except SystemExit as exc:  # argparse's own refusal (a choice not offered)
        code = exc.code
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert ("model directory not found" in err) == config_ok, err
    if not config_ok:
        assert flag in err, err
