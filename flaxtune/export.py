"""Export a train run to a Hugging Face `GPT2ForSequenceClassification` folder.

    export_hf("runs/local", "hf/sst2")          # latest checkpoint; step=N for another
    # python -m flaxtune export --checkpoint runs/local --out hf/sst2

The folder holds

    config.json          GPT2Config, architectures=["GPT2ForSequenceClassification"],
                         num_labels / id2label / label2id from the run's label names,
                         pad_token_id = the tokenizer's pad id (eos 50256 for GPT-2),
                         and a "flaxtune" entry (step, max_length, text/label fields)
    model.safetensors    the PyTorch state dict: transformer.* + score.weight, float32
    tokenizer files      model_max_length set to the run's max_length

so `transformers.GPT2ForSequenceClassification.from_pretrained(folder)` loads it
with no missing or unexpected weights and gives flaxtune's logits (right padding;
the PyTorch model pools at the last token that is not `pad_token_id`, so texts
must not contain "<|endoftext|>"), and `Classifier.from_hf(folder)` /
`--checkpoint folder` bring it back into flaxtune.
"""

from __future__ import annotations

import logging
from pathlib import Path

from flaxtune import hub
from flaxtune.checkpoint import tokenizer_dir
from flaxtune.data.tokenize import load_tokenizer
from flaxtune.weights import load_trained

log = logging.getLogger(__name__)

# meta entries carried into config.json["flaxtune"], so an imported folder keeps the run's defaults
CARRIED_META = ("step", "max_length", "text_field", "label_field", "encoding")


class ExportError(ValueError):
    pass


def hf_config_for(model_config: dict, label_names, pad_token_id: int, info: dict | None = None):
    """The GPT2Config of a GPT2ForSequenceClassification with these labels."""
    from transformers import GPT2Config

    d = {k: v for k, v in model_config.items()
         if k not in ("id2label", "label2id", "num_labels", "architectures", "transformers_version",
                      "flaxtune")}
    config = GPT2Config(**d)
    config.id2label = {i: str(name) for i, name in enumerate(label_names)}
    config.label2id = {str(name): i for i, name in enumerate(label_names)}
    config.pad_token_id = int(pad_token_id)
    config.architectures = ["GPT2ForSequenceClassification"]
    if info:
        config.flaxtune = dict(info)
    return config


def write_hf_folder(out_dir, params, *, model_config: dict, label_names, tokenizer, max_length: int,
                    info: dict | None = None) -> Path:
    """config.json + model.safetensors + tokenizer files for `params` (a GPT2Classifier tree)."""
    out_dir = Path(out_dir)
    if "score" not in params:
        raise ExportError("parameters without a classification head (score) cannot be exported "
                               "as GPT2ForSequenceClassification")
    if tokenizer.pad_token_id is None:
        raise ExportError("the tokenizer has no pad token; GPT2ForSequenceClassification needs pad_token_id")
    out_dir.mkdir(parents=True, exist_ok=True)
    config = hf_config_for(model_config, label_names, tokenizer.pad_token_id, info)
    config.save_pretrained(str(out_dir))
    hub.save_torch_safetensors(params, out_dir / "model.safetensors")
    saved_max = tokenizer.model_max_length
    tokenizer.model_max_length = int(max_length)  # what flaxtune truncates to; HF pipelines follow it
    try:
        tokenizer.save_pretrained(str(out_dir))
    finally:
        tokenizer.model_max_length = saved_max
    return out_dir


def export_hf(workdir, out_dir, step: int | None = None) -> Path:
    """Writes the latest (or given) checkpoint of `workdir` as a Hugging Face folder; returns it."""
    workdir, out_dir = Path(workdir), Path(out_dir)
    if out_dir.absolute() == workdir.absolute() or (out_dir / "checkpoints").is_dir():
        raise ExportError(f"--out {out_dir} is a train workdir; export to a new folder")
    _, params, meta = load_trained(workdir, step)
    tok_dir = tokenizer_dir(workdir)
    if not tok_dir.is_dir():
        raise FileNotFoundError(f"{workdir}: tokenizer files missing (expected {tok_dir})")
    tokenizer = load_tokenizer(str(tok_dir))
    info = {k: meta[k] for k in CARRIED_META if meta.get(k) is not None}
    write_hf_folder(out_dir, params, model_config=meta["model_config"], label_names=meta["label_names"],
                    tokenizer=tokenizer, max_length=meta["max_length"], info=info)
    log.info("exported %s step %d (labels %s) to %s", workdir, meta["step"], meta["label_names"], out_dir)
    return out_dir
