"""Hugging Face GPT-2 import: hub id or local folder -> flaxtune parameters.

One code path for `gpt2` on the hub and for a local folder saved by
`transformers` (`save_pretrained`): resolve to a local folder, read
`config.json`, then weights from `model.safetensors` (PyTorch layout) or
`flax_model.msgpack` (Hugging Face Flax layout).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np
from flax import traverse_util

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "flax_model.msgpack")
_HUB_PATTERNS = ["config.json", *WEIGHT_FILES, "tokenizer.json", "tokenizer_config.json",
                 "vocab.json", "merges.txt", "special_tokens_map.json"]


class WeightsError(ValueError):
    """A checkpoint that does not fit the model (names the file and the parameter)."""


def resolve_model_dir(name_or_path: str) -> Path:
    """A local folder as-is, else a hub repo id downloaded (or taken from the HF cache)."""
    path = Path(os.path.expanduser(name_or_path))
    if path.is_dir():
        return path
    if path.exists() or name_or_path.startswith((".", "/")):
        raise FileNotFoundError(f"model folder {name_or_path!r} does not exist or is not a folder")
    from huggingface_hub import snapshot_download

    try:
        return Path(snapshot_download(repo_id=name_or_path, allow_patterns=_HUB_PATTERNS))
    except Exception as e:  # offline, unknown repo, ...
        raise FileNotFoundError(
            f"could not get {name_or_path!r} from the Hugging Face hub ({type(e).__name__}: {e}). "
            "Pass a local folder holding config.json and model.safetensors, or use "
            "--config.init=scratch to train from random weights.") from e


def load_hf_config(model_dir: Path):
    from transformers import GPT2Config

    return GPT2Config.from_pretrained(str(model_dir))


def _strip_prefix(key: str) -> str:
    for prefix in ("transformer.", "model."):
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def params_from_torch_state(state: dict[str, np.ndarray]) -> dict:
    """PyTorch GPT-2 names/layout -> flaxtune nested params ({'transformer': ..., 'score'?})."""
    flat = {}
    for key, value in state.items():
        value = np.asarray(value)
        if key.startswith("score."):
            flat[("score", "kernel")] = value.T  # nn.Linear (out, in) -> Dense (in, out)
            continue
        k = _strip_prefix(key)
        if k.startswith("lm_head.") or k.endswith(".attn.bias") or k.endswith(".attn.masked_bias"):
            continue  # tied LM head and causal-mask buffers: not parameters here
        parts = k.split(".")
        leaf = parts[-1]
        if parts[0] in ("wte", "wpe"):
            flat[("transformer", parts[0], "embedding")] = value
        elif parts[-2].startswith("ln_"):
            flat[("transformer", *parts[:-1], "scale" if leaf == "weight" else "bias")] = value
        elif leaf == "weight":  # Conv1D weight is (in, out); flaxtune stores (out, in)
            flat[("transformer", *parts[:-1], "kernel")] = value.T
        else:
            flat[("transformer", *parts)] = value
    return traverse_util.unflatten_dict(flat)


def torch_state_from_params(params: dict) -> dict[str, np.ndarray]:
    """Inverse of `params_from_torch_state` (GPT2ForSequenceClassification names)."""
    out = {}
    for path, value in traverse_util.flatten_dict(params).items():
        value = np.asarray(value)
        if path[0] == "score":
            out["score.weight"] = value.T
            continue
        *mod, leaf = path[1:]
        if mod[0] in ("wte", "wpe"):
            out[f"transformer.{mod[0]}.weight"] = value
        elif mod[-1].startswith("ln_"):
            out[f"transformer.{'.'.join(mod)}.{'weight' if leaf == 'scale' else 'bias'}"] = value
        elif leaf == "kernel":
            out[f"transformer.{'.'.join(mod)}.weight"] = np.ascontiguousarray(value.T)
        else:
            out[f"transformer.{'.'.join(mod)}.{leaf}"] = value
    return out


def read_pretrained_params(model_dir: Path) -> tuple[dict, str]:
    """Reads weights from a Hugging Face folder; returns (params, file name read)."""
    model_dir = Path(model_dir)
    st = model_dir / "model.safetensors"
    if st.exists():
        from safetensors.numpy import load_file

        return params_from_torch_state(load_file(str(st))), str(st)
    mp = model_dir / "flax_model.msgpack"
    if mp.exists():
        from flax import serialization

        tree = serialization.msgpack_restore(mp.read_bytes())
        if "transformer" not in tree:  # FlaxGPT2Model saves the backbone at the root
            tree = {"transformer": tree}
        tree = {k: v for k, v in tree.items() if k in ("transformer", "score")}
        return tree, str(mp)
    raise FileNotFoundError(
        f"no weights in {model_dir}: expected one of {', '.join(WEIGHT_FILES)} "
        "(sharded checkpoints are not supported yet)")


def merge_pretrained(init_params: dict, pretrained: dict, source: str) -> tuple[dict, list[str]]:
    """Puts pretrained arrays into a freshly initialised tree.

    Every backbone parameter must be present with the right shape; returns the
    merged tree and the names of parameters left newly initialised.
    """
    flat_init = traverse_util.flatten_dict(init_params)
    flat_pre = traverse_util.flatten_dict(pretrained)
    unexpected = sorted("/".join(k) for k in flat_pre if k not in flat_init)
    if unexpected:
        raise WeightsError(f"{source}: parameters the model does not have: {', '.join(unexpected[:10])}")
    merged, new = {}, []
    for key, init_value in flat_init.items():
        name = "/".join(key)
        if key not in flat_pre:
            if key[0] == "transformer":
                raise WeightsError(f"{source}: backbone parameter {name} is missing")
            merged[key] = init_value
            new.append(name)
            continue
        value = flat_pre[key]
        if tuple(value.shape) != tuple(init_value.shape):
            raise WeightsError(f"{source}: parameter {name} has shape {tuple(value.shape)}, "
                               f"the model expects {tuple(init_value.shape)}")
        merged[key] = np.asarray(value, dtype=init_value.dtype)
    return traverse_util.unflatten_dict(merged), new
