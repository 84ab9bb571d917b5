"""Shareable reports: paths relative to the run or a base directory, never the machine's own."""

from __future__ import annotations

from nmt.config import load_config
from nmt.pipeline.reports import corpus_name, model_dir_name, shareable_config, shareable_path


def test_paths_are_relative_to_the_run_or_the_repository(tmp_path):
    repo, run = tmp_path / "repo", tmp_path / "repo" / "runs" / "x"
    assert shareable_path(run / "data" / "train", run, repo) == "data/train"
    assert shareable_path(repo / "recipes" / "data" / "c", run, repo) == "recipes/data/c"
    assert shareable_path(tmp_path / "corpus" / "train", run, repo) == "../corpus/train"
    # a path that shares nothing with either but the filesystem root keeps its name only
    assert shareable_path("/elsewhere/corpus/train.tsv", run, repo) == "train.tsv"


def test_the_model_directory_is_named_relative_to_the_repository(tmp_path):
    repo = tmp_path / "repo"
    assert model_dir_name(repo / "runs" / "x", repo) == "runs/x"
    assert model_dir_name(tmp_path / "models" / "en_de", repo) == "en_de"


def test_shareable_config_and_corpus_name_hold_no_absolute_path(tmp_path):
    repo = tmp_path / "repo"
    config = load_config(None, [f"output_dir={tmp_path / 'run'}", "data.format=text",
                                f"data.train={tmp_path / 'corpus' / 'train'}",
                                f"data.cache_dir={tmp_path / 'cache'}"])
    raw = shareable_config(config, repo)
    assert raw["output_dir"] == "run" and raw["data"]["train"] == "../corpus/train"
    assert raw["data"]["cache_dir"] == "../cache" and str(tmp_path) not in str(raw)
    assert corpus_name(config, repo) == "../corpus/train"
    hub = load_config(None, ["data.format=hub", "data.dataset=bentrevett/multi30k"])
    assert corpus_name(hub, repo) == "bentrevett/multi30k"
    assert shareable_config(hub, repo)["data"]["train"] is None
