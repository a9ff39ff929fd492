"""Where a run's model shape and first weights come from: the hub, a folder, or scratch."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from flaxtune import hub
from flaxtune.model import GPT2Classifier, GPT2Dims

log = logging.getLogger(__name__)

DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16, "float16": jnp.float16}


@dataclasses.dataclass
class ModelSource:
    hf_config: object            # transformers.GPT2Config
    model_dir: Path | None       # local folder holding the pretrained weights, None for scratch


def model_source(config) -> ModelSource:
    """Resolves `config.init` / `config.model` / `config.scratch_model` to a GPT2Config."""
    from transformers import GPT2Config

    if config.init == "scratch":
        return ModelSource(GPT2Config(**config.scratch_model.to_dict()), None)
    model_dir = hub.resolve_model_dir(config.model)
    return ModelSource(hub.load_hf_config(model_dir), model_dir)


def dims_for(hf_config, dropout: float = -1.0) -> GPT2Dims:
    dims = GPT2Dims.from_hf_config(hf_config)
    if dropout >= 0:
        dims = dataclasses.replace(dims, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
    return dims


def abstract_params(model: GPT2Classifier):
    """Parameter shapes/dtypes without allocating them."""
    ids = jnp.ones((1, 2), jnp.int32)
    return jax.eval_shape(lambda: model.init(jax.random.key(0), ids, ids)["params"])


def initial_params(model: GPT2Classifier, source: ModelSource, seed: int, label_names=None):
    """Random init, with pretrained arrays merged in when there are any.

    A folder holding a trained head (`score.weight`, e.g. a fine-tuned
    GPT2ForSequenceClassification) keeps it when it has as many labels as
    `model`, and is refused with a clear error otherwise. With `label_names`
    (the run's label map), a head whose config.json `id2label` names the same
    labels in another order has its rows reordered to the run's order.

    Logs exactly which parameters are newly initialised.
    """
    pretrained = None
    if source.model_dir is not None:  # read (and check the head) before spending time on init
        pretrained, path = hub.read_pretrained_params(source.model_dir)
        if "score" in pretrained:
            pretrained = fit_pretrained_head(pretrained, source.model_dir, model.num_labels, label_names, path)
    ids = jnp.ones((1, 2), jnp.int32)
    params = jax.device_get(jax.jit(model.init)(jax.random.key(seed), ids, ids)["params"])
    if pretrained is None:
        n = sum(np.size(x) for x in jax.tree.leaves(params))
        log.info("init=scratch: all %d parameters (%.1fM) newly initialised", len(jax.tree.leaves(params)), n / 1e6)
        return params
    params, new = hub.merge_pretrained(params, pretrained, path)
    log.info("loaded pretrained weights from %s; newly initialised: %s", path, ", ".join(new) or "nothing")
    return params


def pretrained_head_labels(model_dir) -> list[str] | None:
    """Label names of the trained head in a Hugging Face folder, by class id; None without a head."""
    model_dir = Path(model_dir)
    st = model_dir / "model.safetensors"
    if st.exists():  # shapes from the header only, no weights read
        from safetensors import safe_open

        with safe_open(str(st), framework="numpy") as f:
            if "score.weight" not in f.keys():
                return None
            n = int(f.get_slice("score.weight").get_shape()[0])  # nn.Linear (out, in)
    else:
        pretrained, _ = hub.read_pretrained_params(model_dir)
        if "score" not in pretrained:
            return None
        n = int(np.shape(pretrained["score"]["kernel"])[1])
    return hub.hf_label_names(model_dir, n)


def fit_pretrained_head(pretrained: dict, model_dir, num_labels: int, label_names, source: str) -> dict:
    """Checks (and if need be reorders) a folder's trained head against the run's labels."""
    kernel = np.asarray(pretrained["score"]["kernel"])  # (n_embd, num_labels)
    n = kernel.shape[1]
    try:
        folder_names = hub.hf_label_names(model_dir, n)
    except hub.WeightsError:
        folder_names = hub.default_label_names(n)
    if n != num_labels:
        run = f" {list(label_names)}" if label_names is not None else ""
        raise hub.WeightsError(
            f"{source}: the folder holds a trained classification head (score.weight) for {n} labels "
            f"{folder_names}, but this run's data has {num_labels} labels{run}. Train on data with the "
            "folder's labels, or start from its backbone only: save a copy without the head "
            "(transformers.GPT2Model.from_pretrained(folder).save_pretrained(new_folder), plus the "
            "tokenizer) and use that as --config.model")
    if label_names is None or folder_names == hub.default_label_names(n):
        return pretrained
    label_names = list(label_names)
    if folder_names == label_names:
        log.info("%s: keeping the trained head; its labels %s are this run's labels", source, label_names)
        return pretrained
    if sorted(folder_names) == sorted(label_names):
        order = [folder_names.index(name) for name in label_names]
        log.info("%s: trained head's labels %s reordered to this run's order %s", source,
                 folder_names, label_names)
        return {**pretrained, "score": {**pretrained["score"], "kernel": kernel[:, order]}}
    log.warning("%s: the trained head's labels %s are not this run's labels %s; keeping its rows by "
                "class id (%s)", source, folder_names, label_names,
                ", ".join(f"{a} -> {b}" for a, b in zip(folder_names, label_names)))
    return pretrained


def load_trained(workdir, step: int | None = None):
    """(model, host params, meta) of a train run's latest (or given) checkpoint."""
    from transformers import GPT2Config

    from flaxtune.checkpoint import Checkpoints

    ckpts = Checkpoints(workdir, read_only=True)
    try:
        meta = ckpts.read_meta(step)
        dims = dims_for(GPT2Config(**meta["model_config"]))
        model = GPT2Classifier(dims, len(meta["label_names"]), dtype=DTYPES[meta.get("dtype", "float32")])
        params = jax.device_get(ckpts.restore_params(abstract_params(model), meta["step"]))
    finally:
        ckpts.close()
    return model, params, meta
