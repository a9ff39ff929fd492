"""Hugging Face GPT-2 import and export: hub id or local folder <-> flaxtune parameters.

One code path for `gpt2` on the hub and for a local folder saved by
`transformers` (`save_pretrained`): resolve to a local folder, read
`config.json`, then weights from `model.safetensors` (PyTorch layout) or
`flax_model.msgpack` (Hugging Face Flax layout). The way back
(`save_torch_safetensors`) writes the PyTorch `GPT2ForSequenceClassification`
layout; `flaxtune.export` builds whole folders from it.
"""

from __future__ import annotations

import json
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
            out["score.weight"] = np.ascontiguousarray(value.T)
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


def is_hf_folder(path) -> bool:
    """A Hugging Face model folder (config.json + weights), as opposed to a train workdir."""
    path = Path(path)
    return (path.is_dir() and (path / "config.json").is_file()
            and any((path / f).is_file() for f in WEIGHT_FILES)
            and not (path / "checkpoints").is_dir())


def read_config_json(model_dir) -> dict:
    return json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))


def default_label_names(n: int) -> list[str]:
    return [f"LABEL_{i}" for i in range(n)]


def hf_label_names(model_dir, num_labels: int) -> list[str]:
    """Class names of a folder's head, ordered by class id, from config.json `id2label`.

    Missing `id2label` gives transformers' defaults `LABEL_0`, `LABEL_1`, ...; an
    `id2label` that does not cover exactly ids 0..num_labels-1 is an error.
    """
    id2label = read_config_json(model_dir).get("id2label")
    if not id2label:
        return default_label_names(num_labels)
    try:
        by_id = {int(k): str(v) for k, v in id2label.items()}
    except (TypeError, ValueError) as e:
        raise WeightsError(f"{Path(model_dir) / 'config.json'}: id2label keys must be class ids, "
                           f"got {sorted(id2label)}") from e
    if sorted(by_id) != list(range(num_labels)):
        raise WeightsError(
            f"{Path(model_dir) / 'config.json'}: id2label has ids {sorted(by_id)}, but the "
            f"classification head (score.weight) has {num_labels} labels")
    names = [by_id[i] for i in range(num_labels)]
    if len(set(names)) != len(names):
        raise WeightsError(f"{Path(model_dir) / 'config.json'}: id2label repeats a name: {names}")
    return names


def save_torch_safetensors(params: dict, path) -> dict[str, np.ndarray]:
    """Writes `params` as a PyTorch GPT2ForSequenceClassification `model.safetensors`.

    Contiguous float32 arrays, metadata `format: pt` (older transformers refuse
    a safetensors file without it). Returns the state dict written.
    """
    from safetensors.numpy import save_file

    state = {k: np.ascontiguousarray(np.asarray(v, dtype=np.float32))
             for k, v in torch_state_from_params(params).items()}
    save_file(state, str(path), metadata={"format": "pt"})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)  # safetensors creates the file 0600; follow the umask like the rest
    return state
