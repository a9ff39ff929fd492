"""Configs: Python files with `get_config()` returning an `ml_collections.ConfigDict`.

As in the Flax examples, `--config path/to/file.py` loads one, and
`--config.a.b=value` (or `--config.a.b value`) overrides a field; the value is
parsed to the type of the field it replaces, so a typo'd field name or a
wrongly typed value is an error at start-up, not a surprise mid-run.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import ml_collections

from flaxtune.parallel import DEFAULT_STRATEGY, STRATEGIES


class ConfigError(ValueError):
    pass


def load_config_file(path: str) -> ml_collections.ConfigDict:
    """Imports a config file and returns its `get_config()` (`file.py:arg` passes arg)."""
    arg = None
    if ":" in path and not Path(path).exists():
        path, arg = path.rsplit(":", 1)
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {path!r} not found (see configs/ for examples)")
    # Configs import their base as `from configs import default`: make the folder
    # above configs/ importable.
    for folder in (str(p.resolve().parent.parent), str(p.resolve().parent)):
        if folder not in sys.path:
            sys.path.insert(0, folder)
    spec = importlib.util.spec_from_file_location(f"flaxtune_config_{p.stem}", p)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ConfigError(f"config file {path} has no get_config() function")
    return module.get_config(arg) if arg is not None else module.get_config()


def _parse_value(text: str, current, name: str):
    if isinstance(current, bool):
        low = text.strip().lower()
        if low in ("true", "1", "yes"):
            return True
        if low in ("false", "0", "no"):
            return False
        raise ConfigError(f"--config.{name}: expected true/false, got {text!r}")
    if isinstance(current, int):
        try:
            return int(text)
        except ValueError:
            raise ConfigError(f"--config.{name}: expected an integer, got {text!r}") from None
    if isinstance(current, float):
        try:
            return float(text)
        except ValueError:
            raise ConfigError(f"--config.{name}: expected a number, got {text!r}") from None
    if isinstance(current, str):
        return text
    if isinstance(current, (tuple, list)) or current is None:
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            if current is None:
                return text
            raise ConfigError(f"--config.{name}: expected a Python literal list, got {text!r}") from None
        return type(current)(value) if current is not None else value
    raise ConfigError(f"--config.{name}: cannot override a field of type {type(current).__name__}")


def apply_overrides(config: ml_collections.ConfigDict, overrides: dict[str, str]) -> None:
    """Sets `a.b.c` fields from strings, typed like the current values."""
    for dotted, text in overrides.items():
        *parents, leaf = dotted.split(".")
        node = config
        for i, part in enumerate(parents):
            if part not in node or not isinstance(node[part], ml_collections.ConfigDict):
                raise ConfigError(f"--config.{dotted}: {'.'.join(parents[:i + 1])} is not a config section")
            node = node[part]
        if leaf not in node:
            known = ", ".join(sorted(node.keys()))
            raise ConfigError(f"--config.{dotted}: unknown field {leaf!r}; fields here: {known}")
        with node.unlocked() if hasattr(node, "unlocked") else _null():
            node[leaf] = _parse_value(text, node[leaf], dotted)


class _null:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


def split_override_args(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """Separates `--config.x.y=v` / `--config.x.y v` from the other arguments."""
    rest, overrides, i = [], {}, 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--config."):
            key = arg[len("--config."):]
            if "=" in key:
                key, value = key.split("=", 1)
            else:
                if i + 1 >= len(argv):
                    raise ConfigError(f"{arg} needs a value (--config.{key}=VALUE)")
                value = argv[i + 1]
                i += 1
            overrides[key] = value
        else:
            rest.append(arg)
        i += 1
    return rest, overrides


def validate_config(config: ml_collections.ConfigDict) -> None:
    """Checks that do not need the model or data (the rest happen in train start-up)."""
    c = config
    if c.init not in ("pretrained", "scratch"):
        raise ConfigError(f"config.init must be 'pretrained' or 'scratch', got {c.init!r}")
    if c.data.source not in ("files", "tfds"):
        raise ConfigError(f"config.data.source must be 'files' or 'tfds', got {c.data.source!r}")
    fraction = c.data.get("eval_fraction", 0.0)
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0.0 <= fraction < 1.0:
        raise ConfigError(f"config.data.eval_fraction must be a number >= 0 and < 1, got {fraction!r}")
    split_seed = c.data.get("split_seed", 0)
    if isinstance(split_seed, bool) or not isinstance(split_seed, int) or split_seed < 0:
        raise ConfigError(f"config.data.split_seed must be an integer >= 0, got {split_seed!r}")
    if c.data.source == "files":
        if fraction and c.data.eval_file:
            raise ConfigError(
                f"config.data.eval_file={c.data.eval_file!r} and config.data.eval_fraction={fraction} "
                "both give an eval set: set --config.data.eval_file='' to hold out a fraction of "
                "train_file, or --config.data.eval_fraction=0 to use the file")
        fields = ("train_file",) if fraction else ("train_file", "eval_file")
        for field in fields:
            if not c.data[field]:
                hint = (" (or --config.data.eval_fraction=0.1 to hold out 10% of train_file)"
                        if field == "eval_file" else "")
                raise ConfigError(f"config.data.{field} is empty: set --config.data.{field}=PATH{hint}")
            if not Path(c.data[field]).is_file():
                raise ConfigError(f"config.data.{field}: file {c.data[field]!r} not found")
    elif not c.data.tfds_name:
        raise ConfigError("config.data.tfds_name is empty: set e.g. --config.data.tfds_name=glue/sst2")
    elif fraction:
        raise ConfigError(
            f"config.data.eval_fraction={fraction} is for data.source=files; with tfds, slice a split "
            "instead, e.g. --config.data.train_split='train[:90%]' --config.data.eval_split='train[90%:]'")
    if c.max_length < 2:
        raise ConfigError(f"config.max_length must be at least 2, got {c.max_length}")
    if c.init == "scratch" and "scratch_model" in c and "n_positions" in c.scratch_model:
        check_max_length(c, c.scratch_model.n_positions)  # pretrained: checked once the model config is read
    t = c.train
    for name in ("batch_size", "eval_batch_size", "grad_accum_steps"):
        if t[name] < 1:
            raise ConfigError(f"config.train.{name} must be >= 1, got {t[name]}")
    if t.learning_rate <= 0:
        raise ConfigError(f"config.train.learning_rate must be > 0, got {t.learning_rate}")
    if t.num_train_steps <= 0 and t.num_epochs <= 0:
        raise ConfigError("set config.train.num_epochs > 0 or config.train.num_train_steps > 0")
    if t.get("strategy", DEFAULT_STRATEGY) not in STRATEGIES:
        raise ConfigError(f"config.train.strategy must be one of {', '.join(STRATEGIES)}, "
                          f"got {t.strategy!r}")
    if c.dtype not in ("float32", "bfloat16", "float16"):
        raise ConfigError(f"config.dtype must be float32, bfloat16 or float16, got {c.dtype!r}")


def check_batch_divisible(config, num_devices: int) -> None:
    for name in ("batch_size", "eval_batch_size"):
        size = config.train[name]
        if size % num_devices:
            lower = max(num_devices, size // num_devices * num_devices)
            raise ConfigError(
                f"config.train.{name}={size} is the global batch and must divide by the "
                f"{num_devices} devices in use; use e.g. --config.train.{name}={lower} "
                f"or {lower + num_devices}")


def check_max_length(config, n_positions: int) -> None:
    if config.max_length > n_positions:
        raise ConfigError(f"config.max_length={config.max_length} exceeds the model's "
                          f"n_positions={n_positions}; set --config.max_length={n_positions} or less")
