"""``nmt export`` and the ONNX Runtime backend: parity with torch, int8, the line contract,
``translate``/``serve``/``evaluate`` on an export, and the errors a user can meet."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

# .ci/run installs the extra and sets NMT_REQUIRE_ONNX=1: there a missing onnx fails the suite
if os.environ.get("NMT_REQUIRE_ONNX") != "1":
    pytest.importorskip("onnxruntime", reason="the ONNX extra is not installed: "
                                              "pip install -e '.[onnx]'")
import onnx  # noqa: E402
import torch  # noqa: E402
from conftest import reverse_overrides  # noqa: E402

from nmt.cli import main  # noqa: E402
from nmt.config import DecodingConfig, load_config  # noqa: E402
from nmt.errors import ConfigError, NMTError  # noqa: E402
from nmt.inference.translator import Translator  # noqa: E402
from nmt.models.search import decode_all  # noqa: E402
from nmt.onnx.export import export_model  # noqa: E402
from nmt.onnx.runtime import OnnxModel  # noqa: E402
from nmt.scoring import score  # noqa: E402
from nmt.training.trainer import Trainer  # noqa: E402

# Every model configuration the export must handle: each attention kind, input feeding, two
# layers, and the bridge 'none'. Tiny models trained for a few seconds on the reverse task.
KINDS = {
    # without attention, the tiny model at 0.01 gives one output for every line
    "none": ["model.attention=none", "training.max_steps=100", "training.lr=0.003",
             "model.embed_size=32", "model.hidden_size=64", "model.decoder_hidden_size=128"],
    "dot": ["model.attention=dot", "model.bridge=none"],
    "general-feed-2layers": ["model.attention=general", "model.input_feeding=true",
                             "model.encoder_layers=2", "model.decoder_layers=2"],
    "mlp-feed": ["model.attention=mlp", "model.input_feeding=true"],
    # copy attention: the step graph also takes the source ids and returns the mixture
    "general-copy": ["model.attention=general", "model.copy_attention=true"],
}
TINY = ["training.max_steps=50", "data.max_len=40", "model.embed_size=16",
        "model.hidden_size=32", "model.decoder_hidden_size=64", "training.lr=0.01"]


def read(prefix: Path, side: str) -> list[str]:
    return Path(f"{prefix}.{side}").read_text(encoding="utf-8").splitlines()


@pytest.fixture(scope="module")
def exports(tmp_path_factory, reverse_task) -> dict[str, tuple[Path, Path]]:
    """(model directory, export directory) of a tiny model of each kind in KINDS."""
    root = tmp_path_factory.mktemp("kinds")
    out = {}
    for name, extra in KINDS.items():
        model_dir = root / name
        config = load_config(None, [*reverse_overrides(model_dir, {"train": reverse_task["train"]}),
                                    *TINY, *extra])
        Trainer(config, quiet=True).fit()
        export_model(model_dir, root / f"{name}.onnx")
        out[name] = (model_dir, root / f"{name}.onnx")
    return out


@pytest.fixture(scope="module")
def exported_int8(trained_reverse, tmp_path_factory) -> Path:
    """The shared trained model exported with its int8 graphs."""
    out = tmp_path_factory.mktemp("int8") / "export"
    export_model(trained_reverse, out, int8=True)
    return out


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("kind", list(KINDS))
def test_greedy_and_beam_match_torch(exports, reverse_task, kind):
    """Greedy: the same output on at least 99% of lines; beam 5: the same best hypothesis on at
    least 99% of lines, and every hypothesis both 5-best lists hold scored within 1e-4."""
    model_dir, export_dir = exports[kind]
    torch_tr = Translator.load(model_dir, precision="fp32")
    onnx_tr = Translator.load(export_dir)
    assert onnx_tr.backend == "onnx" and torch_tr.backend == "torch"
    src = read(reverse_task["test"], "src")
    a, b = torch_tr.translate(src, beam_size=1), onnx_tr.translate(src, beam_size=1)
    assert len(set(a)) > 5, "the model should not give one output for every line"
    same = sum(x == y for x, y in zip(a, b, strict=True)) / len(src)
    assert same >= 0.99, f"{kind}: greedy outputs identical on {same:.1%} of lines"

    ids = [torch_tr.source_ids(line)[0] for line in src[:60]]
    options = DecodingConfig(beam_size=5, n_best=5, max_len_a=1.0, max_len_b=2, batch_tokens=400)
    ref = decode_all(torch_tr.model, ids, options, torch.device("cpu"), None)
    got = decode_all(onnx_tr.model, ids, options, torch.device("cpu"), None)
    same_best, compared = 0, 0
    for hyps_ref, hyps_got in zip(ref, got, strict=True):
        same_best += hyps_ref[0].tokens == hyps_got[0].tokens
        scores = {tuple(h.tokens): h.log_prob for h in hyps_got}
        for h in hyps_ref:  # a near tie may swap two neighbours of a list; scores must agree
            if tuple(h.tokens) in scores:
                # float32 noise: 1e-4, or 2e-5 of a long hypothesis's summed log-probability
                assert abs(h.log_prob - scores[tuple(h.tokens)]) <= max(1e-4,
                                                                        2e-5 * abs(h.log_prob))
                compared += 1
    assert same_best >= 0.99 * len(ids), f"{kind}: best beam hypothesis differs"
    assert compared >= 0.95 * 5 * len(ids)


@pytest.mark.parametrize("kind", ["general-feed-2layers", "general-copy"])
def test_step_matches_for_any_beam_grouping(exports, kind):
    """The step graph runs with the encoder memory shared by groups of 1, 3 and 5 rows, or
    expanded per row after a reorder across sentences, with source lengths the trace never saw
    (with copy attention the source ids follow the memory)."""
    model_dir, export_dir = exports[kind]
    model = Translator.load(model_dir, precision="fp32").model
    backend = OnnxModel.load(export_dir)
    torch.manual_seed(0)
    src = torch.randint(4, model.encoder.embed.num_embeddings, (3, 17))
    lengths = torch.tensor([17, 4, 9])
    src[1, 4:] = src[2, 9:] = 0
    with torch.no_grad():
        for k in (1, 3, 5):
            states = [m.expand(m.init_state(m.encode(src, lengths)), k) for m in (model, backend)]
            tokens = torch.randint(4, 10, (3 * k,))
            for index in (None, torch.tensor([3 * k - 1, 0, 0, 1, 2][: 3 * k])):
                if index is not None:  # rows from different sentences: memory per row
                    states = [m.reorder(s, index) for m, s in zip((model, backend), states,
                                                                  strict=True)]
                    tokens = tokens[index]
                (ref, s_ref), (got, s_got) = (m.step(tokens, s) for m, s in
                                              zip((model, backend), states, strict=True))
                assert got.shape == ref.shape
                # float32 noise: 1e-4 absolute, and 1e-5 relative for log-probabilities far
                # below zero (the copy mixture's log, at -20, differs by up to 1.2e-4)
                torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-5)
                assert float((s_ref.h - s_got.h).abs().max()) < 1e-5
                states = [s_ref, s_got]


@pytest.mark.parametrize("kind", ["general-feed-2layers", "general-copy"])
def test_sentences_join_a_running_search_on_the_export(exports, reverse_task, kind):
    """Continuous batching on ONNX Runtime: sentences admitted into a running search (the
    memory padded, the step graph fed the joined state) get what translate gives them."""
    _, export_dir = exports[kind]
    translator = Translator.load(export_dir)
    lines = read(reverse_task["test"], "src")[:12]
    options = translator.options({"beam_size": 3})
    stream, found, step = translator.stream(options), {}, 0
    while step < 2 or len(stream):
        if step in (0, 2):  # half now, half two steps later
            stream.admit([(i, translator.source_ids(lines[i])[0])
                          for i in range(6 * (step // 2), 6 * (step // 2) + 6)])
        found.update(stream.step())
        step += 1
    assert [found[i][0][0] for i in range(12)] == translator.translate(lines, options)


def test_int8_export_keeps_quality(trained_reverse, exported_int8, reverse_task):
    """int8 graphs: test BLEU at most 2.0 below the fp32 graphs' on the held-out split."""
    src, ref = read(reverse_task["test"], "src"), read(reverse_task["test"], "tgt")
    fp32 = Translator.load(exported_int8).translate(src, beam_size=5)
    int8 = Translator.load(exported_int8, quantize="int8")
    assert int8.model.int8
    hyps = int8.translate(src, beam_size=5)
    bleu32, bleu8 = score(fp32, [ref]).bleu, score(hyps, [ref]).bleu
    assert bleu32 > 80, f"the shared model should reverse well (BLEU {bleu32:.1f})"
    assert bleu8 >= bleu32 - 2.0, f"int8 BLEU {bleu8:.2f} vs fp32 {bleu32:.2f}"


# --------------------------------------------------------------------------- what is written


def test_manifest_names_shapes_hashes_and_dynamic_axes(exported_int8, trained_reverse):
    manifest = json.loads((exported_int8 / "manifest.json").read_text())
    assert manifest["format"] == "nmt-onnx" and manifest["onnx_opset"] == 17
    assert manifest["parity"]["fp32_max_abs_diff"] < 1e-4
    files = {p.name for p in exported_int8.iterdir()}
    assert files == {"manifest.json", "config.yaml", *manifest["files"]}
    assert {"encoder.onnx", "decoder_step.onnx", "encoder.int8.onnx",
            "decoder_step.int8.onnx", "config.yaml", "spm.model"} <= set(manifest["files"])
    assert (exported_int8 / "config.yaml").read_bytes() == (
        trained_reverse / "config.yaml").read_bytes()
    for graph, file_key in (("encoder", "file"), ("decoder_step", "file"),
                            ("encoder", "int8_file"), ("decoder_step", "int8_file")):
        entry = manifest["graphs"][graph]
        proto = onnx.load(str(exported_int8 / entry[file_key]))
        onnx.checker.check_model(proto)
        inputs = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
                  for i in proto.graph.input}
        for spec in entry["inputs"]:  # the manifest's shapes are the graph's, names dynamic
            assert inputs[spec["name"]] == spec["shape"], (graph, spec)
        assert [o.name for o in proto.graph.output] == [o["name"] for o in entry["outputs"]]
    step = manifest["graphs"]["decoder_step"]
    assert [i["name"] for i in step["inputs"]] == ["tokens", "h", "c", "keys", "proj_keys",
                                                    "mask"]
    assert step["outputs"][0] == {"name": "log_probs", "dtype": "float32",
                                  "shape": ["rows", manifest["model"]["tgt_vocab"]]}


def test_export_errors_are_clear_and_write_nothing(trained_reverse, exported_int8, tmp_path,
                                                   monkeypatch, capsys):
    # an ensemble, a directory that is not an export, a missing model
    assert main(["export", "-m", str(trained_reverse), "-m", str(trained_reverse),
                 "-o", str(tmp_path / "x")]) == 2
    assert "an ensemble cannot be exported" in capsys.readouterr().err
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    assert main(["export", "-m", str(trained_reverse), "-o", str(tmp_path / "busy")]) == 2
    assert "not empty and not an earlier export (it holds notes.txt)" in capsys.readouterr().err
    (tmp_path / "busy" / "manifest.json").write_text("{}")  # someone else's manifest
    assert main(["export", "-m", str(trained_reverse), "-o", str(tmp_path / "busy")]) == 2
    assert "not an earlier export" in capsys.readouterr().err
    assert (tmp_path / "busy" / "notes.txt").read_text() == "mine"
    assert main(["export", "-m", str(tmp_path / "nope"), "-o", str(tmp_path / "y")]) == 2
    assert "not found" in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]  # no half-written export
    # without the extra: what to install
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[onnx\]'"):
        export_model(trained_reverse, tmp_path / "z")
    with pytest.raises(ConfigError, match=r"pip install -e '\.\[onnx\]'"):
        Translator.load(exported_int8)
    monkeypatch.undo()
    # backends and directories that do not fit
    with pytest.raises(NMTError, match="nmt export -m"):
        Translator.load(trained_reverse, backend="onnx")
    with pytest.raises(ConfigError, match="--backend onnx"):
        Translator.load(exported_int8, backend="torch")
    with pytest.raises(ConfigError, match="not bf16"):
        Translator.load(exported_int8, precision="bf16")
    with pytest.raises(ConfigError, match="runs on the CPU"):
        Translator.load(exported_int8, device="cuda")
    assert main(["translate", "-m", str(exported_int8), "-m", str(trained_reverse)]) == 2
    assert "an ensemble runs on the torch backend" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="attention maps need the torch backend"):
        Translator.load(exported_int8).attention(["a b"], ["b a"])


def test_damaged_or_incomplete_exports_are_refused(exports, tmp_path):
    _, export_dir = exports["dot"]
    copy = shutil.copytree(export_dir, tmp_path / "copy")
    with pytest.raises(ConfigError, match="nmt export --int8"):
        Translator.load(copy, quantize="int8")
    step = copy / "decoder_step.onnx"
    step.write_bytes(step.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(NMTError, match="does not match the SHA-256"):
        Translator.load(copy)
    manifest = json.loads((export_dir / "manifest.json").read_text())
    del manifest["graphs"]["decoder_step"]["outputs"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(NMTError, match="'decoder_step' graph entry is incomplete"):
        Translator.load(copy)
    (copy / "manifest.json").write_text('{"format": "nmt-onnx", "format_version": 99}')
    with pytest.raises(NMTError, match="export the model again"):
        Translator.load(copy)
    # a file written into an export (hypotheses, say) is kept: re-export is refused
    (export_dir.parent / "spare").mkdir()
    spare = shutil.copytree(export_dir, export_dir.parent / "spare" / "e")
    (spare / "test.beam5.hyp").write_text("kept\n")
    with pytest.raises(ConfigError, match=r"it holds test\.beam5\.hyp"):
        export_model(exports["dot"][0], spare)
    assert (spare / "test.beam5.hyp").read_text() == "kept\n"


def test_reexport_replaces_an_earlier_export(exports, tmp_path):
    model_dir, _ = exports["none"]
    out = tmp_path / "e"
    export_model(model_dir, out, int8=True)
    assert (out / "encoder.int8.onnx").is_file()
    export_model(model_dir, out)  # again, without int8: the old int8 graphs are gone
    assert not (out / "encoder.int8.onnx").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e"]


# --------------------------------------------------------------------------- the commands


def test_translate_cli_keeps_the_line_contract(trained_reverse, exported_int8, tmp_path):
    """One output line per input line with the ONNX backend too: empty and blank lines stay
    empty, an over-long line is cut as with torch, and the text equals torch's."""
    lines = ["a b c", "", "   ", "h g f e", "a " * 60, "d c b a"]
    src = tmp_path / "in.txt"
    src.write_text("\n".join(lines) + "\n", encoding="utf-8")
    outs = {}
    for name, args in (("torch", ["-m", str(trained_reverse), "--precision", "fp32"]),
                       ("onnx", ["-m", str(exported_int8)]),
                       ("int8", ["-m", str(exported_int8), "--quantize", "int8"])):
        out = tmp_path / f"{name}.txt"
        assert main(["translate", *args, "-i", str(src), "-o", str(out), "-q",
                     "--beam-size", "5"]) == 0
        outs[name] = out.read_text(encoding="utf-8").split("\n")[:-1]
        assert len(outs[name]) == len(lines)
        assert outs[name][1] == outs[name][2] == ""
    assert outs["onnx"] == outs["torch"]


@pytest.mark.slow
def test_serve_and_evaluate_run_on_an_export(exported_int8, reverse_task, tmp_path, capsys):
    """``nmt serve --backend onnx`` answers LibreTranslate requests as the backend translates;
    ``nmt evaluate -m EXPORT`` scores it."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "nmt", "serve", "-m", str(exported_int8), "--backend", "onnx",
         "--port", str(port), "--beam-size", "2", "-q"],
        env={**os.environ, "PYTHONUNBUFFERED": "1"}, stderr=subprocess.PIPE)
    try:
        body = json.dumps({"q": ["a b c", "e f g h"], "source": "src",
                           "target": "tgt"}).encode()
        deadline, reply = time.time() + 60, None
        while reply is None and time.time() < deadline and server.poll() is None:
            try:
                request = urllib.request.Request(f"http://127.0.0.1:{port}/translate", body,
                                                 {"Content-Type": "application/json"})
                with urllib.request.urlopen(request, timeout=30) as answer:
                    reply = json.loads(answer.read())
            except OSError:
                time.sleep(0.2)
        assert reply is not None, server.stderr.read().decode() if server.poll() else "timeout"
        expected = Translator.load(exported_int8).translate(["a b c", "e f g h"], beam_size=2)
        assert reply["translatedText"] == expected
    finally:
        server.terminate()
        server.wait(30)
    hyp = tmp_path / "test.hyp"
    assert main(["evaluate", "-m", str(exported_int8), "--src", f"{reverse_task['test']}.src",
                 "--ref", f"{reverse_task['test']}.tgt", "--hyp-out", str(hyp), "--json",
                 "--beam-size", "1"]) == 0
    assert json.loads(capsys.readouterr().out)["bleu"] > 80
    assert json.loads(hyp.with_suffix(".json").read_text())["backend"] == "onnx"


def test_glossary_constraints_on_the_onnx_backend(exports, reverse_task):
    """Constrained beam search runs on the ONNX step graph as on torch (copy attention too):
    every output holds its term, and the outputs are torch's."""
    model_dir, export_dir = exports["general-copy"]
    torch_tr = Translator.load(model_dir, precision="fp32")
    onnx_tr = Translator.load(export_dir)
    src = read(reverse_task["test"], "src")[:40]
    ids = [torch_tr.source_ids(line)[0] for line in src]
    term = torch_tr.tgt_tok.encode("h", add_eos=False)
    constraints = [[term] if i % 2 else [] for i in range(len(ids))]
    options = DecodingConfig(beam_size=3, max_len_a=1.0, max_len_b=3, batch_tokens=400)
    cpu = torch.device("cpu")
    want = decode_all(torch_tr.model, ids, options, cpu, None, constraints=constraints)
    got = decode_all(onnx_tr.model, ids, options, cpu, None, constraints=constraints)
    for terms, hyps in zip(constraints, got, strict=True):
        tokens = hyps[0].tokens
        for t in terms:
            assert any(tokens[i:i + len(t)] == t for i in range(len(tokens))), (tokens, t)
    same = sum(a[0].tokens == b[0].tokens for a, b in zip(want, got, strict=True))
    assert same >= 0.95 * len(ids)


def test_nmt_serve_keeps_the_export_searches_on_threads_unless_asked(exported_int8,
                                                                     trained_reverse):
    """``--workers-in auto``: a continuous search of the torch backend runs in a child process,
    one of ONNX Runtime's on a thread (a round trip to a child per step costs more there than
    the GIL does); either may be asked for."""
    from nmt.errors import ConfigError
    from nmt.serve.server import load_models

    def in_processes(model: Path, workers_in: str) -> bool:
        served = load_models([str(model)], "cpu", "fp32", None, 0.005, 100, continuous=True,
                             workers=1, workers_in=workers_in)[0]
        served.batcher.close()
        assert served.batcher.continuous
        return served.batcher.processes

    assert not in_processes(exported_int8, "auto")
    assert in_processes(exported_int8, "processes")
    assert in_processes(trained_reverse, "auto")
    assert not in_processes(trained_reverse, "threads")
    with pytest.raises(ConfigError, match="workers_in"):
        in_processes(trained_reverse, "fibres")
