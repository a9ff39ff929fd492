"""Batched inference, and `Classifier`: a trained workdir restored on any devices.

    clf = Classifier.restore("runs/local")
    clf.predict(["a gorgeous, moving film"])   # -> [Prediction(label, probs, text)]
    clf.evaluate(records)                       # -> accuracy, macro_f1, loss, num_examples, ...

    Classifier.from_hf("hf/sst2")               # a GPT2ForSequenceClassification folder
    Classifier.load(path)                       # either of the two, told apart by the folder
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import numpy as np

from flaxtune import hub
from flaxtune.checkpoint import CheckpointError, tokenizer_dir
from flaxtune.data.labels import encode_labels
from flaxtune.data.readers import where
from flaxtune.data.pipeline import bucket_lengths, eval_batches
from flaxtune.data.tokenize import Tokenized, TokenizationError, load_tokenizer, tokenize_texts
from flaxtune.metrics import classification_metrics
from flaxtune.model import GPT2Classifier
from flaxtune.parallel import DEFAULT_STRATEGY, make_strategy
from flaxtune.weights import abstract_params, dims_for, load_trained

TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "tokenizer_config.json")
MAX_LENGTH_CAP = 1024  # default max_length for a Hugging Face folder without a recorded one


def _logits_step(params, batch, *, model):
    return model.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                       deterministic=True)


@functools.lru_cache(maxsize=8)
def _compiled_logits(model, strategy):
    return strategy.compile_eval_step(functools.partial(_logits_step, model=model))


def predict_logits(model, params, data: Tokenized, *, strategy, global_batch: int,
                   buckets: list[int], replicated: bool = False) -> np.ndarray:
    """Logits for every example of `data`, in input order, each counted exactly once."""
    if not replicated:
        params = strategy.replicate(params)
    step = _compiled_logits(model, strategy)
    out = np.zeros((len(data), model.num_labels), np.float32)
    for batch in eval_batches(data, global_batch=global_batch, num_devices=strategy.num_devices,
                              buckets=buckets):
        index = batch.pop("index")
        logits = strategy.gather_rows(step(params, batch))
        keep = index >= 0
        out[index[keep]] = logits[keep]
    return out


@dataclasses.dataclass
class Prediction:
    label: str
    probs: list[float]
    text: str


def softmax(x):
    z = np.exp(x - x.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


class Classifier:
    """A trained model with its tokenizer and label names, ready for inference."""

    def __init__(self, model, params, tokenizer, label_names, max_length, meta, strategy):
        self.model, self.tokenizer = model, tokenizer
        self.label_names, self.max_length, self.meta = list(label_names), max_length, meta
        self.strategy = strategy
        self.params = strategy.replicate(params)
        self.buckets = bucket_lengths(max_length)

    @classmethod
    def restore(cls, workdir, *, step: int | None = None, devices=None) -> "Classifier":
        """Loads the latest (or given) checkpoint of a train run onto `devices` (default: all local)."""
        model, params, meta = load_trained(workdir, step)
        tok_dir = tokenizer_dir(workdir)
        if not tok_dir.is_dir():
            raise FileNotFoundError(f"{workdir}: tokenizer files missing (expected {tok_dir})")
        tokenizer = load_tokenizer(str(tok_dir))
        return cls(model, params, tokenizer, meta["label_names"], meta["max_length"], meta,
                   make_strategy(DEFAULT_STRATEGY, devices))

    @classmethod
    def from_hf(cls, folder, *, tokenizer=None, max_length: int | None = None,
                devices=None) -> "Classifier":
        """A Hugging Face GPT2ForSequenceClassification folder (config.json + model.safetensors).

        Label names come from config.json `id2label` ordered by class id (the defaults
        `LABEL_0`, `LABEL_1`, ... when the folder has no names); the tokenizer from the
        folder unless `tokenizer` (a folder / hub id, or a tokenizer object) is given.
        `max_length` defaults to the one recorded by `flaxtune export`, else the
        tokenizer's `model_max_length`, capped at the model's `n_positions` and 1024.
        """
        folder = Path(folder)
        if not (folder / "config.json").is_file():
            raise FileNotFoundError(f"{folder}: not a Hugging Face model folder (no config.json)")
        raw = hub.read_config_json(folder)
        if raw.get("model_type", "gpt2") != "gpt2":
            raise hub.WeightsError(f"{folder}/config.json: model_type {raw.get('model_type')!r}; "
                                   "flaxtune runs GPT-2 models only")
        hf_config = hub.load_hf_config(folder)
        pretrained, path = hub.read_pretrained_params(folder)
        if "score" not in pretrained:
            raise hub.WeightsError(
                f"{path}: no classification head (score.weight); this is a bare GPT-2 "
                f"(architectures {raw.get('architectures')}). Fine-tune it first: python -m flaxtune "
                f"train ... --config.init=pretrained --config.model={folder}")
        num_labels = int(np.shape(pretrained["score"]["kernel"])[1])
        label_names = hub.hf_label_names(folder, num_labels)
        dims = dims_for(hf_config)
        model = GPT2Classifier(dims, num_labels)
        params, new = hub.merge_pretrained(abstract_params(model), pretrained, path)
        if new:  # merge_pretrained already refuses a missing backbone parameter
            raise hub.WeightsError(f"{path}: parameters missing: {', '.join(new)}")

        if tokenizer is None:
            if not any((folder / f).is_file() for f in TOKENIZER_FILES):
                raise TokenizationError(
                    f"{folder}: no tokenizer files ({', '.join(TOKENIZER_FILES)}); pass the tokenizer "
                    "(Classifier.from_hf(folder, tokenizer=...) or --tokenizer, e.g. ../shared/tokenizers/gpt2)")
            tokenizer = load_tokenizer(str(folder))
        elif isinstance(tokenizer, (str, Path)):
            tokenizer = load_tokenizer(str(tokenizer))
        elif tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token

        info = raw.get("flaxtune") or {}
        if max_length is not None:
            max_length = int(max_length)
            if not 0 < max_length <= dims.n_positions:
                raise ValueError(f"max_length={max_length}: must be between 1 and the model's "
                                 f"n_positions={dims.n_positions}")
        else:
            max_length = info.get("max_length")
            if max_length is None:
                tok_max = getattr(tokenizer, "model_max_length", None)  # ~1e30 when unset
                max_length = tok_max if isinstance(tok_max, int) and 0 < tok_max < MAX_LENGTH_CAP else MAX_LENGTH_CAP
            max_length = min(int(max_length), dims.n_positions)
        model_config = hf_config.to_dict()
        model_config.pop("transformers_version", None)
        meta = {"step": info.get("step"), "label_names": label_names, "model_config": model_config,
                "max_length": max_length, "dtype": "float32", "hf_folder": str(folder),
                **{k: info[k] for k in ("text_field", "label_field", "encoding") if k in info}}
        return cls(model, params, tokenizer, label_names, max_length, meta, make_strategy(DEFAULT_STRATEGY, devices))

    @classmethod
    def load(cls, path, *, step: int | None = None, tokenizer=None, max_length: int | None = None,
             devices=None) -> "Classifier":
        """A train workdir (`restore`) or a Hugging Face folder (`from_hf`), told apart by its files."""
        path = Path(path)
        if hub.is_hf_folder(path):
            if step is not None:
                raise CheckpointError(f"{path} is a Hugging Face folder (one set of weights); "
                                      "a step applies to train workdirs only")
            return cls.from_hf(path, tokenizer=tokenizer, max_length=max_length, devices=devices)
        if tokenizer is not None or max_length is not None:
            raise CheckpointError(f"{path}: a tokenizer or max_length can only be given for a Hugging "
                                  "Face folder; a train workdir has its own")
        if not (path / "checkpoints").is_dir():
            raise CheckpointError(
                f"{path} is neither a train workdir (no checkpoints/ folder) nor a Hugging Face "
                f"folder (config.json + {' or '.join(hub.WEIGHT_FILES)})")
        return cls.restore(path, step=step, devices=devices)

    def _tokenize(self, texts, labels=None, sources=None) -> Tokenized:
        return tokenize_texts(self.tokenizer, list(texts), self.max_length,
                              vocab_size=self.model.dims.vocab_size, labels=labels, sources=sources)

    def _batch_size(self, per_device: int) -> int:
        return per_device * self.strategy.num_devices

    def logits(self, texts, *, per_device_batch: int = 32) -> np.ndarray:
        return predict_logits(self.model, self.params, self._tokenize(texts), strategy=self.strategy,
                              global_batch=self._batch_size(per_device_batch), buckets=self.buckets,
                              replicated=True)

    def predict(self, texts, *, per_device_batch: int = 32) -> list[Prediction]:
        texts = list(texts)
        probs = softmax(self.logits(texts, per_device_batch=per_device_batch))
        return [Prediction(self.label_names[int(p.argmax())], p.tolist(), t) for p, t in zip(probs, texts)]

    def evaluate(self, records, *, per_device_batch: int = 32) -> dict:
        """Metrics on labelled records; a label unknown to the model is an error naming its line."""
        labels = encode_labels(records, self.label_names)
        data = self._tokenize([r.text for r in records], labels,
                              [where(r.source, r.line) for r in records])
        logits = predict_logits(self.model, self.params, data, strategy=self.strategy,
                                global_batch=self._batch_size(per_device_batch), buckets=self.buckets,
                                replicated=True)
        return classification_metrics(logits, labels, len(self.label_names))
