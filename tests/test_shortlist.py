"""Lexical shortlists: IBM Model 1 finds a dictionary, search over a shortlist is search over
the whole vocabulary with the rest ruled out (torch, copy attention, ensembles, ONNX), the table
round-trips and is checked, and the commands make and use it."""

from __future__ import annotations

import copy
import shutil

import pytest
import torch

from nmt.cli import main
from nmt.config import DecodingConfig, ModelConfig
from nmt.data.shortlist import Restriction, Shortlist, build_shortlist
from nmt.data.tokenizer import SPECIAL_IDS
from nmt.errors import NMTError
from nmt.models.search import beam_search, decode_all, greedy
from nmt.models.seq2seq import Ensemble, build_model

SPECIAL = len(SPECIAL_IDS)


def test_ibm1_finds_each_source_words_translation() -> None:
    """Sentences of random words with a one-to-one dictionary (and the target order reversed):
    each source word's best candidate is its translation, though every target word co-occurs
    with many source words."""
    generator = torch.Generator().manual_seed(0)
    words = 30
    translation = {SPECIAL + i: SPECIAL + (i * 7) % words for i in range(words)}
    sources, targets = [], []
    for _ in range(600):
        length = int(torch.randint(3, 8, (1,), generator=generator))
        src = (torch.randint(0, words, (length,), generator=generator) + SPECIAL).tolist()
        sources.append([*src, 3])  # EOS at the end, as encoded: ignored
        targets.append([2, *[translation[s] for s in reversed(src)], 3])
    size = SPECIAL + words
    table = build_shortlist(sources, targets, size, size, joint=False, per_source=3, frequent=5)
    best = {s: int(table.candidates[s, 0]) for s in translation}
    assert best == translation
    assert table.frequent.numel() == 5 and bool((table.frequent >= SPECIAL).all())


def test_vocabulary_union_keeps_special_positions_and_source(tmp_path) -> None:
    candidates = torch.zeros(20, 2, dtype=torch.long)  # PAD: no candidate
    candidates[10] = torch.tensor([12, 13])
    table = Shortlist(candidates, torch.tensor([5]), joint=True, target_size=20)
    restriction = table.restriction(torch.tensor([[10, 7, 3], [9, 3, 0]]))
    assert restriction.ids.tolist() == [0, 1, 2, 3, 5, 7, 9, 10, 12, 13]
    assert restriction.allowed.int().tolist() == [[1, 1, 1, 1, 1, 1, 0, 1, 1, 1],
                                                  [1, 1, 1, 1, 1, 0, 1, 0, 0, 0]]
    assert table.restriction(torch.tensor([[9, 3]])).allowed is None  # one sentence: all
    separate = Shortlist(candidates, torch.tensor([5]), joint=False, target_size=20)
    assert separate.vocabulary(torch.tensor([[10, 3]])).tolist() == [0, 1, 2, 3, 5, 12, 13]
    path = tmp_path / "shortlist.safetensors"
    table.save(path)
    loaded = Shortlist.load(path, 20, 20)
    assert torch.equal(loaded.candidates, candidates) and loaded.joint
    with pytest.raises(NMTError, match="does not fit the model's vocabularies"):
        Shortlist.load(path, 20, 21)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(NMTError, match="not a shortlist table"):
        Shortlist.load(path, 20, 20)
    with pytest.raises(NMTError, match="nmt shortlist"):
        Shortlist.load(tmp_path / "missing.safetensors", 20, 20)


def _model(copy_attention: bool, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    cfg = ModelConfig(embed_size=16, hidden_size=16, decoder_hidden_size=16, dropout=0.0,
                      tie_embeddings=True, copy_attention=copy_attention)
    return build_model(cfg, 60, 60).eval()


def _masked(model: torch.nn.Module, vocab: torch.Tensor) -> torch.nn.Module:
    """A copy whose output layer rules out every id outside ``vocab`` (bias -1e9)."""
    masked = copy.deepcopy(model)
    outside = torch.ones(60, dtype=torch.bool)
    outside[vocab] = False
    with torch.no_grad():
        masked.decoder.output.bias[outside] = -1e9
    return masked


@pytest.mark.parametrize("copy_attention", [False, True])
def test_search_over_a_shortlist_is_search_with_the_rest_ruled_out(copy_attention) -> None:
    """Greedy and beam search restricted to a shortlist give the tokens and scores of the full
    search of a model whose output layer rules out the other ids; with copy attention the
    source's ids are in the shortlist and copying keeps working."""
    model = _model(copy_attention, 0)
    generator = torch.Generator().manual_seed(1)
    src = torch.randint(SPECIAL, 60, (6, 7), generator=generator)
    src[:, -1] = 3
    src[4, 4:] = 0
    src[4, 3] = 3
    lengths = torch.tensor([7, 7, 7, 7, 4, 7])
    keep = torch.randperm(60 - SPECIAL, generator=generator)[:15] + SPECIAL
    vocab = torch.unique(torch.cat([torch.arange(SPECIAL), keep, src.reshape(-1)]))
    masked = _masked(model, vocab)
    allowed = set(vocab.tolist())
    for kwargs in ({"beam_size": 4, "n_best": 2, "no_repeat_ngram": 2}, {"beam_size": 3}):
        want = beam_search(masked, src, lengths, max_len_a=1.0, max_len_b=3, **kwargs)
        got = beam_search(model, src, lengths, max_len_a=1.0, max_len_b=3,
                          restriction=Restriction(vocab, None), **kwargs)
        for a, b in zip(want, got, strict=True):
            assert [h.tokens for h in a] == [h.tokens for h in b]
            assert [h.score for h in a] == pytest.approx([h.score for h in b], abs=1e-4)
            assert all(set(h.tokens) <= allowed for h in b)
    want = greedy(masked, src, lengths, 1.0, 3)
    got = greedy(model, src, lengths, 1.0, 3, restriction=Restriction(vocab, None))
    assert [t for t, _ in want] == [t for t, _ in got]
    # the whole vocabulary as a shortlist is no shortlist
    full = beam_search(model, src, lengths, beam_size=3, max_len_a=1.0, max_len_b=3)
    same = beam_search(model, src, lengths, beam_size=3, max_len_a=1.0, max_len_b=3,
                       restriction=Restriction(torch.arange(60), None))
    assert [h[0].tokens for h in full] == [h[0].tokens for h in same]


def test_each_sentence_is_searched_over_its_own_shortlist_whatever_its_batch() -> None:
    """decode_all with a shortlist: a batch projects onto the union of its sentences' lists, but
    each sentence keeps to its own, so an ensemble's output for a sentence is the same in any
    batch, and is the full search of the ensemble masked to that sentence's list."""
    models = [_model(True, 0), _model(True, 1)]
    candidates = torch.zeros(60, 3, dtype=torch.long)
    candidates[SPECIAL:, 0] = torch.arange(SPECIAL, 60).flip(0)
    candidates[SPECIAL:, 1] = (torch.arange(SPECIAL, 60) * 7) % 56 + SPECIAL
    table = Shortlist(candidates, torch.tensor([10, 11]), joint=True, target_size=60)
    sources = [[5, 6, 7, 3], [8, 9, 3], [40, 41, 42, 43, 3], [20, 3]]
    options = DecodingConfig(beam_size=3, max_len_a=1.0, max_len_b=3, batch_tokens=100)
    cpu = torch.device("cpu")
    together = decode_all(Ensemble(models), sources, options, cpu, None, shortlist=table)
    for ids, got in zip(sources, together, strict=True):
        alone = decode_all(Ensemble(models), [ids], options, cpu, None, shortlist=table)
        vocab = table.vocabulary(torch.tensor([ids]))
        masked = decode_all(Ensemble([_masked(m, vocab) for m in models]), [ids], options, cpu,
                            None)
        assert got[0].tokens == alone[0][0].tokens == masked[0][0].tokens
        assert got[0].score == pytest.approx(masked[0][0].score, abs=1e-4)
        assert set(got[0].tokens) <= set(vocab.tolist())


def test_shortlist_command_and_flag_on_torch_and_onnx(trained_reverse, reverse_task, tmp_path,
                                                      capsys) -> None:
    """nmt shortlist makes the table from the model's own training data; translate --shortlist
    keeps the reverse model's outputs (every symbol it writes is a source symbol), and refuses
    a model without a table; an export carries the table and its graph, and gives torch's
    outputs with --shortlist."""
    model = tmp_path / "model"
    shutil.copytree(trained_reverse, model)
    src = reverse_task["test"].with_suffix(".src")
    lines = src.read_text(encoding="utf-8").splitlines()[:30]
    (tmp_path / "in.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    args = ["translate", "-m", str(model), "-i", str(tmp_path / "in.txt"), "--beam-size", "3"]
    assert main([*args, "--shortlist", "-o", str(tmp_path / "x")]) == 2
    assert "nmt shortlist" in capsys.readouterr().err and not (tmp_path / "x").exists()
    assert main(["shortlist", "-m", str(model), "--per-source", "2", "--frequent", "0"]) == 0
    assert (model / "shortlist.safetensors").is_file()
    assert main([*args, "-o", str(tmp_path / "full.txt")]) == 0
    assert main([*args, "--shortlist", "-o", str(tmp_path / "short.txt")]) == 0
    full = (tmp_path / "full.txt").read_text(encoding="utf-8")
    assert (tmp_path / "short.txt").read_text(encoding="utf-8") == full
    pytest.importorskip("onnxruntime")
    from nmt.onnx.export import export_model

    manifest = export_model(model, tmp_path / "export")
    assert "decoder_step_shortlist" in manifest["graphs"]
    assert "shortlist.safetensors" in manifest["files"]
    # the output layer's rows come as inputs, gathered once per batch from the file beside it
    inputs = [i["name"] for i in manifest["graphs"]["decoder_step_shortlist"]["inputs"]]
    assert inputs[-2:] == ["out_weight", "out_bias"]
    assert "output_layer.safetensors" in manifest["files"]
    onnx_args = ["translate", "-m", str(tmp_path / "export"), "-i", str(tmp_path / "in.txt"),
                 "--beam-size", "3", "--shortlist", "-o", str(tmp_path / "onnx.txt")]
    assert main(onnx_args) == 0
    assert (tmp_path / "onnx.txt").read_text(encoding="utf-8") == full
