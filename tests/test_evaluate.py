"""Evaluating: scoring files, and a model directory translated then scored with its hypotheses'
settings written beside them (precision, device, beam, model hash), without touching argparse."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from types import ModuleType

import pytest
from conftest import reverse_overrides, write_reverse_task

from nmt.cli import build_parser, main
from nmt.console import parse_args
from nmt.errors import ConfigError, DataError
from nmt.fileio import sha256_file
from nmt.inference.evaluate import evaluate_model, meta_path
from nmt.layout import RunDir
from nmt.scoring import evaluate_files


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, dict[str, Path]]:
    """A tiny model trained for a few updates on the reverse task (train and test splits)."""
    root = tmp_path_factory.mktemp("evaluate")
    prefixes = write_reverse_task(root / "data", {"train": 200, "test": 12})
    assert main(["train", "-q", *reverse_overrides(root / "run", prefixes),
                 "training.max_steps=4"]) == 0
    return root / "run", prefixes


def load_script(name: str) -> ModuleType:
    """``scripts/NAME.py`` imported as a module (the scripts are not a package)."""
    path = Path(__file__).resolve().parents[1] / "scripts" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_meta_path_is_beside_the_hypotheses():
    assert meta_path("run/test.beam5.hyp") == Path("run/test.beam5.json")
    assert meta_path("out.json") == Path("out.json.json")  # never the hypotheses themselves


def test_evaluate_files_needs_references_and_equal_line_counts(tmp_path):
    (tmp_path / "h").write_text("a b\nc d\n", encoding="utf-8")
    (tmp_path / "r").write_text("a b\n", encoding="utf-8")
    with pytest.raises(ConfigError):
        evaluate_files(tmp_path / "h", [])
    with pytest.raises(DataError, match="line counts differ"):
        evaluate_files(tmp_path / "h", [tmp_path / "r"])


def test_evaluate_model_refuses_unclear_inputs_before_loading(tmp_path):
    with pytest.raises(ConfigError):
        evaluate_model(tmp_path / "nowhere")  # neither a source nor a split
    with pytest.raises(ConfigError):
        evaluate_model(tmp_path / "nowhere", src="a", refs=["b"], split="test")
    with pytest.raises(ConfigError, match="own references"):
        evaluate_model(tmp_path / "nowhere", split="test", refs=["b"])


def test_evaluate_a_split_writes_hypotheses_and_what_made_them(trained):
    run_dir, _ = trained
    result = evaluate_model(run_dir, split="test", decoding={"beam_size": 2, "max_len_b": None})
    run = RunDir(run_dir)
    assert result.hypotheses == run.hypotheses("test", 2) and result.hypotheses.is_file()
    assert result.meta == run.hypotheses_meta("test", 2)
    meta = json.loads(result.meta.read_text(encoding="utf-8"))
    assert meta["beam_size"] == 2 and meta["decoding"]["beam_size"] == 2
    assert meta["decoding"]["max_len_b"] == 2  # None keeps the model's setting
    assert meta["precision"] == result.precision and meta["device"] == "cpu"
    assert meta["model_sha256"] == sha256_file(run.model) and meta["sentences"] == 12
    assert result.scores.sentences == 12


def test_evaluate_command_leaves_its_arguments_alone(trained, capsys):
    run_dir, prefixes = trained
    argv = ["evaluate", "-m", str(run_dir), "--src", f"{prefixes['test']}.src", "--ref",
            f"{prefixes['test']}.tgt", "--beam-size", "1", "--json"]
    args = parse_args(build_parser(), argv)
    before = dict(vars(args))
    assert args.handler(args) == 0
    assert vars(args) == before
    assert json.loads(capsys.readouterr().out)["sentences"] == 12
    meta = json.loads((run_dir / "test.src.beam1.json").read_text(encoding="utf-8"))
    assert meta["source"] == "test.src" and meta["precision"] in ("fp32", "bfloat16", "float16")
    assert (run_dir / "test.src.beam1.hyp").read_text(encoding="utf-8").count("\n") == 12


def test_name_passthrough_counts_names_the_reference_keeps():
    """scripts/name_passthrough.py: a name is a source word with an uppercase letter or a
    digit that the reference keeps; words the reference translates do not count."""
    module = load_script("name_passthrough")
    src = ["If you use the HSQL database, press F4.", "Open the file.", "Use Calc 3 now"]
    ref = ["Wenn Sie die HSQL-Datenbank nutzen, drücken Sie F4.", "Öffnen Sie die Datei.",
           "Nutzen Sie Calc 3 jetzt"]
    assert module.names(src[0], ref[0]) == ["HSQL", "F4"]  # kept in "HSQL-Datenbank"; not "If"
    assert module.names(src[1], ref[1]) == []
    hyps = ["Drücken Sie F4.", "Datei öffnen.", "Nutzen Sie Calc 3 jetzt"]
    result = module.passthrough(src, ref, hyps)
    assert (result["names"], result["found"]) == (4, 3)  # HSQL is lost
    assert result["sentences_with_names"] == 2 and result["sentences_all_kept"] == 0.5


def test_analyze_brevity_reports_every_search_and_the_model_errors(trained_reverse,
                                                                   reverse_task, tmp_path,
                                                                   monkeypatch, capsys):
    """scripts/analyze_brevity.py on the reverse model: one row per search setting, the reward
    rows after the reward-free ones, and shares that are shares; the trained model reverses
    well, so beam 5 with penalty 1 is close to the reference length."""
    import sys

    module = load_script("analyze_brevity")
    prefix = reverse_task["test"]
    out = tmp_path / "brevity.json"
    monkeypatch.setattr(sys, "argv", [
        "analyze_brevity.py", "-m", str(trained_reverse), "--src", f"{prefix}.src",
        "--ref", f"{prefix}.tgt", "--limit", "40", "--rewards", "1.0", "--json", str(out)])
    assert module.main() == 0
    result = json.loads(out.read_text(encoding="utf-8"))
    names = [row["setting"] for row in result["search"]]
    assert names[0] == "greedy" and names[-1] == "beam 5, lp 1, word reward 1"
    assert len(names) == 8 and result["sentences"] == 40
    default = next(r for r in result["search"] if "default" in r["setting"])
    assert default["ratio"] == pytest.approx(1.0, abs=0.1) and default["bleu"] > 80
    errors = result["model_or_search_error"]  # shares, or None when no output is shorter
    assert 0.0 <= errors["sentences_shorter_than_reference"] <= 1.0
    assert all(v is None or 0.0 <= v <= 1.0 for v in errors.values())
    assert 0.0 <= result["teacher_forced_eos"]["eos_argmax_before_reference_end"] <= 1.0
    assert "| search | BLEU |" in capsys.readouterr().out


def test_plot_budget_plots_and_tabulates_the_runs_and_refuses_mixed_searches(tmp_path, capsys):
    """scripts/plot_budget.py: points sorted by minutes, a PNG, the JSON and the table; runs
    scored with different word rewards are refused, as is a run without results.json."""
    module = load_script("plot_budget")

    def run(name: str, seconds: float, bleu: float, reward: float = 0.3) -> Path:
        (tmp_path / name).mkdir()
        (tmp_path / name / "results.json").write_text(json.dumps({
            "test": {"bleu": bleu, "chrf": bleu * 2},
            "training": {"seconds": seconds, "steps": int(seconds), "epochs": 3,
                         "target_tokens_per_s": 1000.0, "best_valid_bleu": bleu - 5,
                         "precision": "bfloat16"},
            "translation": {"decoding": {"word_reward": reward}},
            "hardware": {"cpu": "Test CPU"}}), encoding="utf-8")
        return tmp_path / name

    runs = [run("m60", 3600, 27.5), run("m15", 900, 22.0), run("m30", 1800, 26.0)]
    out, table = tmp_path / "budget.png", tmp_path / "budget.json"
    assert module.main([*map(str, runs), "-o", str(out), "--json", str(table)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"
    assert [r["minutes"] for r in json.loads(table.read_text())] == [15.0, 30.0, 60.0]
    assert "| 60.0 | 3,600 | 3 | 1000.0 | 22.50 | 27.50 | 55.00 |" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="differ in decoding"):
        module.main([str(runs[0]), str(run("other", 600, 1.0, reward=0.0)), "-o", str(out)])
    with pytest.raises(SystemExit, match="does not exist"):
        module.main([str(tmp_path / "none"), "-o", str(out)])
