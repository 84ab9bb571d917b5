"""Sources: every corpus kind, alignment errors, schema hints, offline hub, fingerprints."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import make_pairs, write_text_corpus

from nmt.config import load_config
from nmt.data.sources import fingerprint, hub_reachable, load_splits
from nmt.errors import DataError, HubUnreachableError


def texts(ds):
    return list(zip(ds["src"], ds["tgt"], strict=True))


def test_text_files_load_aligned_with_crlf_and_unicode_separators(tmp_path):
    (tmp_path / "c.en").write_bytes("a\u2028b\r\nsecond\nno newline".encode())
    (tmp_path / "c.de").write_bytes("x\r\ny\u0085z\nlast".encode())
    cfg = load_config(None, [f"data.train={tmp_path / 'c'}"]).data
    ds = load_splits(cfg, tmp_path / "cache", ("train",))["train"]
    assert texts(ds) == [("a\u2028b", "x"), ("second", "y\u0085z"), ("no newline", "last")]


def test_line_count_mismatch_names_both_counts(tmp_path):
    (tmp_path / "c.en").write_text("1\n2\n3\n", encoding="utf-8")
    (tmp_path / "c.de").write_text("1\n2\n", encoding="utf-8")
    cfg = load_config(None, [f"data.train={tmp_path / 'c'}"]).data
    with pytest.raises(DataError, match=r"c.en has 3 lines but .*c.de has 2"):
        load_splits(cfg, tmp_path / "cache", ("train",))


def test_invalid_utf8_names_the_line(tmp_path):
    (tmp_path / "c.en").write_bytes(b"ok\nbad \xff byte\n")
    (tmp_path / "c.de").write_bytes(b"gut\nschlecht\n")
    cfg = load_config(None, [f"data.train={tmp_path / 'c'}"]).data
    with pytest.raises(DataError, match=r"c.en: line 2 is not valid UTF-8"):
        load_splits(cfg, tmp_path / "cache", ("train",))


def test_missing_files_are_named(tmp_path):
    cfg = load_config(None, [f"data.train={tmp_path / 'nope'}"]).data
    with pytest.raises(DataError, match=r"source file not found: .*nope.en"):
        load_splits(cfg, tmp_path / "cache", ("train",))
    with pytest.raises(DataError, match="data.train is not set"):
        load_splits(load_config().data, tmp_path / "cache", ("train",))


def test_tsv(tmp_path):
    (tmp_path / "c.tsv").write_text("hello\thallo\n\nworld\twelt\n", encoding="utf-8")
    cfg = load_config(None, ["data.format=tsv", f"data.train={tmp_path / 'c.tsv'}"]).data
    assert texts(load_splits(cfg, tmp_path / "cache", ("train",))["train"]) == [
        ("hello", "hallo"), ("", ""), ("world", "welt")]
    (tmp_path / "bad.tsv").write_text("a\tb\nonly one field\n", encoding="utf-8")
    cfg = load_config(None, ["data.format=tsv", f"data.train={tmp_path / 'bad.tsv'}"]).data
    with pytest.raises(DataError, match="line 2 has 1 tab-separated fields"):
        load_splits(cfg, tmp_path / "cache", ("train",))


def test_jsonl_nested_and_flat(tmp_path):
    nested = tmp_path / "n.jsonl"
    nested.write_text("\n".join(json.dumps({"translation": {"de": d, "en": e}, "id": i})
                                for i, (e, d) in enumerate([("one", "eins"), ("two", "zwei")])),
                      encoding="utf-8")
    cfg = load_config(None, ["data.format=jsonl", f"data.train={nested}",
                             "data.translation_field=translation"]).data
    assert texts(load_splits(cfg, tmp_path / "cache", ("train",))["train"]) == [
        ("one", "eins"), ("two", "zwei")]
    flat = tmp_path / "f.jsonl"
    flat.write_text('{"en": "one", "de": "eins"}\n{"en": "two", "de": "zwei"}\n', encoding="utf-8")
    cfg = load_config(None, ["data.format=jsonl", f"data.train={flat}"]).data
    assert texts(load_splits(cfg, tmp_path / "cache", ("train",))["train"]) == [
        ("one", "eins"), ("two", "zwei")]
    cfg = load_config(None, ["data.format=jsonl", f"data.train={flat}",
                             "data.translation_field=translation"]).data
    with pytest.raises(DataError, match="line 1 lacks 'translation'"):
        load_splits(cfg, tmp_path / "cache", ("train",))


def _save_hub_like(tmp_path: Path, nested: bool) -> Path:
    import datasets

    def split(pairs):
        if nested:  # the wmt / iwslt / opus schema
            return datasets.Dataset.from_dict(
                {"translation": [{"de": d, "en": e} for e, d in pairs]},
                features=datasets.Features({"translation": datasets.Translation(["de", "en"])}))
        return datasets.Dataset.from_dict({"en": [e for e, _ in pairs],  # multi30k: flat
                                           "de": [d for _, d in pairs]})

    path = tmp_path / ("nested" if nested else "flat")
    datasets.DatasetDict({"train": split(make_pairs(50)), "validation": split(make_pairs(5, 1)),
                          "test": split(make_pairs(6, 2))}).save_to_disk(str(path))
    return path


@pytest.mark.parametrize("nested", [True, False])
def test_hub_schema_datasets_saved_to_disk(tmp_path, nested):
    path = _save_hub_like(tmp_path, nested)
    extra = ["data.translation_field=translation"] if nested else []
    cfg = load_config(None, ["data.format=disk", f"data.dataset={path}", *extra]).data
    splits = load_splits(cfg, tmp_path / "cache")
    assert {k: len(v) for k, v in splits.items()} == {"train": 50, "valid": 5, "test": 6}
    assert texts(splits["test"]) == make_pairs(6, 2)


def test_schema_mistakes_get_hints(tmp_path):
    path = _save_hub_like(tmp_path, nested=True)
    cfg = load_config(None, ["data.format=disk", f"data.dataset={path}"]).data
    with pytest.raises(DataError, match="set data.translation_field: translation"):
        load_splits(cfg, tmp_path / "cache")
    cfg = load_config(None, ["data.format=disk", f"data.dataset={path}", "data.src_lang=fr",
                             "data.translation_field=translation"]).data
    with pytest.raises(DataError, match="no language 'fr'"):
        load_splits(cfg, tmp_path / "cache")
    cfg = load_config(None, ["data.format=disk", f"data.dataset={path}", "data.valid=dev",
                             "data.translation_field=translation"]).data
    with pytest.raises(DataError, match="no split 'dev'"):
        load_splits(cfg, tmp_path / "cache")


def test_unnamed_missing_splits_are_skipped_named_ones_are_errors(tmp_path):
    import datasets

    path = tmp_path / "only_train"
    datasets.DatasetDict({"train": datasets.Dataset.from_dict(
        {"en": [e for e, _ in make_pairs(20)], "de": [d for _, d in make_pairs(20)]})}
    ).save_to_disk(str(path))
    cfg = load_config(None, ["data.format=disk", f"data.dataset={path}"]).data
    assert list(load_splits(cfg, tmp_path / "cache")) == ["train"]
    cfg = load_config(None, ["data.format=disk", f"data.dataset={path}", "data.test=test"]).data
    with pytest.raises(DataError, match="no split 'test' for data.test"):
        load_splits(cfg, tmp_path / "cache")


def test_hub_probe_fails_fast_on_a_closed_port(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    start = time.perf_counter()
    ok, reason = hub_reachable(timeout=3)
    assert not ok and "127.0.0.1:9" in reason
    assert time.perf_counter() - start < 3.5


def test_offline_hub_prepare_is_fast_and_one_clear_line(tmp_path):
    env = {**os.environ, "HF_ENDPOINT": "http://127.0.0.1:9", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_OFFLINE", None)
    env.pop("HF_DATASETS_OFFLINE", None)
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "nmt", "prepare", "--dataset",
                           "bentrevett/multi30k", "--src-lang", "de", "--tgt-lang", "en",
                           "--output-dir", str(tmp_path / "run")],
                          capture_output=True, text=True, env=env, timeout=60)
    elapsed = time.perf_counter() - start
    assert proc.returncode == 2
    lines = [x for x in proc.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, proc.stderr
    assert "cannot reach the Hugging Face hub" in lines[0] and "local files" in lines[0]
    assert "Traceback" not in proc.stderr
    assert elapsed < 5


def test_hub_unreachable_error_is_raised_by_the_library(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    cfg = load_config(None, ["data.format=hub", "data.dataset=wmt16",
                             "data.dataset_config=de-en"]).data
    with pytest.raises(HubUnreachableError, match="HF_HUB_OFFLINE=1"):
        load_splits(cfg, tmp_path / "cache")


def test_fingerprint_is_stable_across_loads_and_follows_the_content(tmp_path):
    prefix = write_text_corpus(tmp_path / "c" / "train", make_pairs(20))
    cfg = load_config(None, [f"data.train={prefix}"]).data

    def load():
        return fingerprint(load_splits(cfg, tmp_path / "cache", ("train",))["train"])

    first = load()
    assert load() == first  # a second load of the same files: the same fingerprint
    write_text_corpus(prefix, make_pairs(20, seed=5))  # new content, same line count
    changed = load()
    assert changed != first and load() == changed


def test_fingerprint_of_in_memory_datasets_follows_rows_and_order():
    import datasets

    def make(src):
        return datasets.Dataset.from_dict({"src": src, "tgt": [s.upper() for s in src]})

    ds = make(["a", "b", "c"])
    assert not ds.cache_files
    assert fingerprint(ds) == fingerprint(make(["a", "b", "c"]))
    assert fingerprint(ds) != fingerprint(make(["a", "b", "d"]))
    assert fingerprint(ds.select([2, 0])) == fingerprint(make(["c", "a"]))
    assert fingerprint(ds.select([2, 0])) != fingerprint(ds.select([0, 2]))
    assert fingerprint(make([])) == fingerprint(make([]))


def test_several_training_sources_are_one_corpus_in_order(tmp_path):
    first = write_text_corpus(tmp_path / "a" / "train", make_pairs(5, 0))
    second = write_text_corpus(tmp_path / "b" / "train", make_pairs(3, 1))
    cfg = load_config(None, values={"data": {"train": [str(first), str(second)]}}).data
    train = load_splits(cfg, tmp_path / "cache", ("train",))["train"]
    assert list(zip(train["src"], train["tgt"], strict=True)) == make_pairs(5, 0) + make_pairs(3, 1)
    again = load_splits(cfg, tmp_path / "cache", ("train",))["train"]
    assert fingerprint(train) == fingerprint(again)
    one = load_config(None, values={"data": {"train": [str(first)]}}).data
    assert fingerprint(load_splits(one, tmp_path / "cache", ("train",))["train"]) != \
        fingerprint(train)
    hub = load_config(None, values={"data": {"format": "hub", "dataset": "x",
                                             "train": ["a", "b"]}}).data
    with pytest.raises(DataError, match="a list is for local files"):
        load_splits(hub, tmp_path / "cache", ("train",))
