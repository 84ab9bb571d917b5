"""The shareable reports of a run: the contents of ``results.json``, the model card
``README.md`` and the description of the hardware it ran on.

These files travel with a model directory, so they name no path of the machine that trained
it: the corpus is named by its hub dataset, or by a path relative to the run directory or to
a base directory (the recipe passes the directory it was run from, where its relative paths
such as ``runs/NAME`` start); the config's paths are made relative the same way; the model
directory is named relative to the base (or by its own name when it lies elsewhere).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any, Protocol

from nmt.config import FILE_FORMATS, Config, DecodingConfig, to_dict
from nmt.console import usable_cores
from nmt.scoring import Scores

# --------------------------------------------------------------------------- paths


def _relative(path: Path, base: Path) -> str | None:
    """``path`` relative to ``base``, or None when that climbs up to the filesystem root (it
    would spell the machine's directories)."""
    rel = Path(os.path.relpath(path, base))
    ups = next((i for i, part in enumerate(rel.parts) if part != ".."), len(rel.parts))
    return rel.as_posix() if ups < len(base.parts) - 1 else None


def shareable_path(path: str | Path, run_dir: str | Path, base: Path) -> str:
    """A local path as a shared report shows it: relative to the run directory or to ``base``,
    whichever is shorter; its name alone when it lies outside both."""
    target = Path(path).resolve()
    candidates = [rel for start in (Path(run_dir).resolve(), base.resolve())
                  if (rel := _relative(target, start)) is not None]
    return min(candidates, key=len) if candidates else target.name


def model_dir_name(run_dir: str | Path, base: Path) -> str:
    """How a report names its own model directory: relative to ``base`` when it lies under it
    (``runs/lohelp_en_de``), else by its name."""
    root, start = Path(run_dir).resolve(), base.resolve()
    return root.relative_to(start).as_posix() if root.is_relative_to(start) else root.name


def corpus_name(config: Config, base: Path) -> str:
    """The corpus of a run: the hub dataset's name, else a shareable path of the saved dataset
    (``disk``) or of the training files."""
    data = config.data
    if data.format == "hub":
        return str(data.dataset)
    where = data.dataset if data.format == "disk" else data.train
    if isinstance(where, list):  # several training sources read as one corpus
        return " + ".join(shareable_path(w, config.out, base) for w in where)
    return shareable_path(where, config.out, base) if where else "?"


def shareable_config(config: Config, base: Path) -> dict[str, Any]:
    """The config as a plain dict with every local path made shareable (see the module)."""
    raw = to_dict(config)
    raw["output_dir"] = model_dir_name(config.out, base)

    def share(section: str, key: str) -> None:
        value = raw[section].get(key)
        if isinstance(value, list):
            raw[section][key] = [shareable_path(v, config.out, base) for v in value]
        elif value:
            raw[section][key] = shareable_path(value, config.out, base)

    if config.data.format in FILE_FORMATS:
        for split in ("train", "valid", "test"):
            share("data", split)
    if config.data.format == "disk":
        share("data", "dataset")
    share("data", "cache_dir")
    for key in ("model", "src_model", "tgt_model"):
        share("tokenizer", key)
    share("training", "init_from")
    return raw


# --------------------------------------------------------------------------- results.json


def hardware() -> dict[str, Any]:
    """What the run ran on: CPU model and cores, memory, torch version and threads, GPU."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = None
    try:
        memory = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {"cpu": cpu, "cores": usable_cores(), "memory_gib": memory, "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def results(recipe_name: str, config: Config, scores: Scores, beam: int,
            training: dict[str, Any], translation: dict[str, Any],
            stages: dict[str, Any], base: Path) -> dict[str, Any]:
    """The contents of ``results.json``: corpus, test scores with their signatures, the
    training and translation figures, each stage's seconds, the hardware and the config (paths
    relative to the run directory or ``base``)."""
    return {
        "recipe": recipe_name, "name": config.name,
        "data": {"source": corpus_name(config, base), "format": config.data.format,
                 "src_lang": config.data.src_lang, "tgt_lang": config.data.tgt_lang,
                 "pairs": stages.get("tokenizer", {}).get("summary", "")},
        "test": {"bleu": round(scores.bleu, 2), "chrf": round(scores.chrf, 2),
                 "ter": round(scores.ter, 2), "sentences": scores.sentences,
                 "beam_size": beam, "bleu_signature": scores.bleu_signature,
                 "chrf_signature": scores.chrf_signature},
        "training": training,
        "base_model": _shared_base(training.get("base_model"), config, base),
        "translation": translation,
        "stage_seconds": {k: round(v["seconds"], 1) for k, v in stages.items()},
        "hardware": hardware(),
        "config": shareable_config(config, base),
    }


def _shared_base(record: dict[str, Any] | None, config: Config,
                 base: Path) -> dict[str, Any] | None:
    """A fine-tuned run's base model (path made shareable), or None."""
    if not record:
        return None
    return {**record, "path": shareable_path(record["path"], config.out, base)}


# --------------------------------------------------------------------------- the model card


class RecipeInfo(Protocol):
    """What the model card says of the recipe that made a run (a
    :class:`nmt.pipeline.recipe.Recipe` has these)."""

    name: str
    description: str
    data_notice: str
    cite: list[str]


def search_settings(d: DecodingConfig) -> str:
    """The decoding settings that shape the scores, in words (model card)."""
    words = [f"beam {d.beam_size}" if d.beam_size > 1 else "greedy",
             f"length penalty {d.length_penalty:g}", f"word reward {d.word_reward:g}",
             f"at most {d.max_len_a:g} x source length + {d.max_len_b} tokens"]
    if d.no_repeat_ngram:
        words.append(f"no repeated {d.no_repeat_ngram}-grams")
    words.append("long lines split" if d.long_lines == "split" else "long lines cut")
    if d.beam_size > 1:
        words.append(f"{d.stopping} stopping")
    return ", ".join(words)


def model_card(recipe: RecipeInfo, config: Config, results: dict[str, Any], base: Path) -> str:
    """The run directory's README.md: data, model, training, scores, how to use it (the model
    directory named relative to ``base``)."""
    test, training = results["test"], results["training"]
    hw = results["hardware"]
    m = config.model
    model_dir = model_dir_name(config.out, base)
    lines = [
        f"# {config.name}: {config.data.src_lang}→{config.data.tgt_lang} LSTM translation model",
        "",
        f"Made by the recipe `recipes/{recipe.name}.py` of nmt. {recipe.description}",
        "",
        "## Data",
        "",
        f"- source: `{results['data']['source']}` ({config.data.format})",
        f"- after cleaning: {results['data']['pairs'] or 'see stages.json'}",
    ]
    if recipe.data_notice:
        lines.append(f"- licence: {recipe.data_notice}")
    lines += [
        "",
        "## Model",
        "",
        f"- BiLSTM encoder {m.encoder_layers} x {m.hidden_size} per direction, embeddings "
        f"{m.embed_size}; LSTM decoder {m.decoder_layers} x {m.decoder_hidden_size}; attention "
        f"{m.attention}; bridge {m.bridge}; input feeding {str(m.input_feeding).lower()}; "
        f"dropout {m.dropout}{f', word dropout {m.word_dropout}' if m.word_dropout else ''}"
        f"{'; copy attention (pointer-generator)' if m.copy_attention else ''}",
        f"- SentencePiece {config.tokenizer.type}, vocabulary "
        f"{config.tokenizer.vocab_size or 'by the corpus size (the number is under Data)'}"
        f"{' (joint)' if config.tokenizer.joint else ''}",
        f"- parameters: {training.get('parameters', 0):,}",
        "",
        "## Training",
        "",
        f"- {training.get('steps', '?')} updates, {training.get('epochs', '?')} epochs, "
        f"{training.get('seconds', 0) / 60:.1f} minutes, "
        f"{training.get('target_tokens_per_s') or '?'} target tokens/s, "
        f"{training.get('precision', '?')} on {training.get('device', '?')}",
        *([f"- fine-tuned from `{results['base_model']['name']}` "
           f"(`{results['base_model']['path']}`, weights sha256 "
           f"`{results['base_model']['weights_sha256']}`), with a fresh optimizer and schedule"]
          if results.get("base_model") else []),
        f"- hardware: {hw['cpu']}, {hw['cores']} cores"
        f"{', ' + hw['gpu'] if hw.get('gpu') else ''}; torch {hw['torch']}",
        "",
        "## Scores on the test set",
        "",
        "| sentences | beam | BLEU | chrF |",
        "|---|---|---|---|",
        f"| {test['sentences']} | {test['beam_size']} | {test['bleu']:.2f} | {test['chrf']:.2f} |",
        "",
        f"- search: {search_settings(config.decoding)}",
        f"- BLEU signature: `{test['bleu_signature']}`",
        f"- chrF signature: `{test['chrf_signature']}`",
        "",
        "## Use",
        "",
        f"`{model_dir}` is this model directory (the folder holding this file).",
        "",
        "```bash",
        f"nmt translate -m {model_dir} -i input.{config.data.src_lang} "
        f"-o output.{config.data.tgt_lang}",
        f"nmt evaluate -m {model_dir} --src test.{config.data.src_lang} "
        f"--ref test.{config.data.tgt_lang}",
        "```",
        "",
        "```python",
        "from nmt.inference.translator import Translator",
        "",
        f"translator = Translator.load({model_dir!r})",
        "print(translator.translate([\"...\"]))",
        "```",
    ]
    if recipe.cite:
        lines += ["", "## References", ""] + [f"- {c}" for c in recipe.cite]
    return "\n".join(lines) + "\n"
