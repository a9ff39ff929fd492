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


def initial_params(model: GPT2Classifier, source: ModelSource, seed: int):
    """Random init, with pretrained arrays merged in when there are any.

    Logs exactly which parameters are newly initialised.
    """
    ids = jnp.ones((1, 2), jnp.int32)
    params = jax.device_get(jax.jit(model.init)(jax.random.key(seed), ids, ids)["params"])
    if source.model_dir is None:
        n = sum(np.size(x) for x in jax.tree.leaves(params))
        log.info("init=scratch: all %d parameters (%.1fM) newly initialised", len(jax.tree.leaves(params)), n / 1e6)
        return params
    pretrained, path = hub.read_pretrained_params(source.model_dir)
    params, new = hub.merge_pretrained(params, pretrained, path)
    log.info("loaded pretrained weights from %s; newly initialised: %s", path, ", ".join(new) or "nothing")
    return params
