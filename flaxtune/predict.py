"""Batched inference, and `Classifier`: a trained workdir restored on any devices.

    clf = Classifier.restore("runs/local")
    clf.predict(["a gorgeous, moving film"])   # -> [Prediction(label, probs, text)]
    clf.evaluate(records)                       # -> accuracy, macro_f1, loss, num_examples, ...
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

import jax
import numpy as np

from flaxtune.checkpoint import Checkpoints, tokenizer_dir
from flaxtune.data.labels import encode_labels
from flaxtune.data.pipeline import bucket_lengths, eval_batches
from flaxtune.data.tokenize import Tokenized, load_tokenizer, tokenize_texts
from flaxtune.metrics import classification_metrics
from flaxtune.model import GPT2Classifier
from flaxtune.parallel import PmapStrategy
from flaxtune.weights import DTYPES, abstract_params, dims_for


def _logits_step(params, batch, *, model):
    return model.apply({"params": params}, batch["input_ids"], batch["attention_mask"],
                       deterministic=True)


@functools.lru_cache(maxsize=8)
def _compiled_logits(model, strategy):
    return strategy.compile_eval_step(functools.partial(_logits_step, model=model))


def predict_logits(model, params, data: Tokenized, *, strategy: PmapStrategy, global_batch: int,
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
        from transformers import GPT2Config

        ckpts = Checkpoints(workdir, read_only=True)
        meta = ckpts.read_meta(step)
        dims = dims_for(GPT2Config(**meta["model_config"]))
        model = GPT2Classifier(dims, len(meta["label_names"]), dtype=DTYPES[meta.get("dtype", "float32")])
        params = jax.device_get(ckpts.restore_params(abstract_params(model), meta["step"]))
        ckpts.close()
        tok_dir = tokenizer_dir(workdir)
        if not tok_dir.is_dir():
            raise FileNotFoundError(f"{workdir}: tokenizer files missing (expected {tok_dir})")
        tokenizer = load_tokenizer(str(tok_dir))
        return cls(model, params, tokenizer, meta["label_names"], meta["max_length"], meta,
                   PmapStrategy(devices))

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
                              [f"{r.source}:{r.line}" for r in records])
        logits = predict_logits(self.model, self.params, data, strategy=self.strategy,
                                global_batch=self._batch_size(per_device_batch), buckets=self.buckets,
                                replicated=True)
        return classification_metrics(logits, labels, len(self.label_names))
