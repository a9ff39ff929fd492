"""tensorflow-datasets source producing the same :class:`Record` objects as the file readers.

TensorFlow is only a data loader here: :func:`hide_accelerators_from_tf` is
called before TensorFlow is used so it never grabs the GPU/TPU that JAX needs.
``tensorflow`` and ``tensorflow_datasets`` are imported lazily, so importing
this module is cheap.

Records: ``source`` is ``"tfds:<name>[<split>]"``, ``line`` the 1-based record
index, text decoded from UTF-8 bytes. Integer labels become the ``ClassLabel``
name when the feature has names (``glue/sst2`` -> ``"negative"`` /
``"positive"``), else ``str(int)``. Negative integer labels (``-1``, used by
GLUE for the unlabelled test splits) become ``None`` so validation reports them
as missing. Content validation is left to
:func:`flaxtune.data.validation.validate_records`, as for files.

With ``download=False`` (the default) nothing is ever downloaded: if the
dataset has not been prepared in ``data_dir`` a :class:`DataError` is raised at
once. With ``download=True`` and a dataset not yet prepared, a short
connectivity probe (:func:`network_available`, a few seconds at most) runs
first, so an offline machine gets a :class:`DataError` naming the dataset and
``data_dir`` at once instead of tfds retrying each download URL; any error
raised while downloading or preparing is turned into a :class:`DataError` too.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from urllib.parse import urlsplit

import numpy as np

from .readers import DataError, Record

__all__ = ["read_tfds", "hide_accelerators_from_tf", "network_available"]

# tfds downloads from many hosts; this one (tfds' own GCS bucket) stands for "the internet".
PROBE_HOST = ("storage.googleapis.com", 443)
PROBE_TIMEOUT_S = 5.0

log = logging.getLogger(__name__)
_hidden = False


def hide_accelerators_from_tf() -> None:
    """Make TensorFlow see no GPU (idempotent). Call before TF creates any op."""
    global _hidden
    if _hidden:
        return
    import tensorflow as tf

    try:
        tf.config.set_visible_devices([], "GPU")
    except (RuntimeError, ValueError) as e:  # devices already initialised
        if tf.config.get_visible_devices("GPU"):
            log.warning("could not hide GPUs from TensorFlow (%s); TF may take accelerator memory", e)
    _hidden = True


def _probe_target() -> tuple[str, int]:
    """The host to probe: the HTTPS proxy when one is configured, else :data:`PROBE_HOST`."""
    proxy = os.environ.get("HTTPS_PROXY") or os.environ.get("https_proxy")
    if proxy:
        parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        if parts.hostname:
            return parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    return PROBE_HOST


def network_available(timeout: float = PROBE_TIMEOUT_S) -> bool:
    """True if a TCP connection to the download host (or the HTTPS proxy) opens within ``timeout`` s.

    Runs in a daemon thread so that a hanging DNS lookup cannot block longer than ``timeout``.
    """
    host, port = _probe_target()
    ok = []

    def probe():
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            pass

    t = threading.Thread(target=probe, daemon=True, name="flaxtune-net-probe")
    t.start()
    t.join(timeout + 0.5)
    return bool(ok)


def _where_dir(data_dir, builder) -> str:
    shown = data_dir if data_dir else "None (tfds default)"
    return f"data_dir={shown} (looked in {builder.data_dir})"


def _download(builder, name: str, source: str, data_dir) -> None:
    if builder.is_prepared():
        return
    offline_fix = (
        f"prepare it on a machine with internet (`tfds build {name} --data_dir=DIR`), copy DIR here and set "
        "data.tfds_data_dir=DIR, or use local files (data.source=files)."
    )
    if not network_available():
        host, port = _probe_target()
        raise DataError(
            f"{source}: dataset {name!r} is not prepared in {_where_dir(data_dir, builder)} and cannot be "
            f"downloaded: no network ({host}:{port} unreachable within {PROBE_TIMEOUT_S:g} s). To fix: "
            f"{offline_fix}"
        )
    try:
        builder.download_and_prepare()
    except Exception as e:  # network errors, missing optional deps, checksum errors, ...
        first = (str(e).splitlines() or [""])[0][:300]
        raise DataError(
            f"{source}: downloading/preparing dataset {name!r} into {_where_dir(data_dir, builder)} failed: "
            f"{type(e).__name__}: {first}. To fix: check the network, or {offline_fix}"
        ) from e


def _decode_text(value, source: str, index: int, field: str) -> str:
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, (bytes, np.bytes_)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError as e:
            raise DataError(
                f"{source}, record {index}, field {field!r}: text is not valid UTF-8 ({e.reason} at byte {e.start}); "
                "choose another text field or dataset."
            ) from None
    if isinstance(value, str):
        return value
    raise DataError(
        f"{source}, record {index}, field {field!r}: expected a text (string) feature, got "
        f"{type(value).__name__}; set data.text_field to a string feature of the dataset."
    )


def read_tfds(
    name: str,
    *,
    split: str,
    data_dir: str | None = None,
    text_field: str = "sentence",
    label_field: str = "label",
    download: bool = False,
) -> list[Record]:
    """Read split ``split`` of tfds dataset ``name`` (e.g. ``"glue/sst2"``) as records."""
    hide_accelerators_from_tf()
    import tensorflow_datasets as tfds

    source = f"tfds:{name}[{split}]"
    data_dir = data_dir or None  # "" (config default) -> tfds default directory
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except ValueError as e:  # includes DatasetNotFoundError / unknown config
        raise DataError(
            f"{source}: cannot load tensorflow-datasets builder {name!r}: {str(e).splitlines()[0]} "
            "Check data.tfds_name (e.g. glue/sst2, imdb_reviews)."
        ) from None

    if download:
        _download(builder, name, source, data_dir)
    try:
        ds = builder.as_dataset(split=split, shuffle_files=False)
    except AssertionError:
        # tfds signals "not prepared in data_dir" with an AssertionError.
        raise DataError(
            f"{source}: dataset {name!r} is not prepared in {_where_dir(data_dir, builder)}. "
            f"Nothing is downloaded with download=False: set data.tfds_download=True "
            f"(needs internet), or prepare it elsewhere with `tfds build {name} --data_dir=DIR` and set "
            "data.tfds_data_dir=DIR."
        ) from None
    except (ValueError, KeyError) as e:
        splits = list(builder.info.splits.keys())
        raise DataError(
            f"{source}: cannot read split {split!r}: {str(e).splitlines()[0]} Available splits: {splits}."
        ) from None

    features = builder.info.features
    for field, kind in ((text_field, "text"), (label_field, "label")):
        if field not in features:
            raise DataError(
                f"{source}, field {field!r}: dataset has no {kind} feature {field!r}; features found: "
                f"{sorted(features.keys())}. Set data.{kind}_field to one of them."
            )
    label_feature = features[label_field]
    names = getattr(label_feature, "names", None)

    records: list[Record] = []
    for index, example in enumerate(tfds.as_numpy(ds), start=1):
        text = _decode_text(example[text_field], source, index, text_field)
        raw = example[label_field]
        if isinstance(raw, np.ndarray) and raw.shape == ():
            raw = raw.item()
        if isinstance(raw, (bytes, np.bytes_, str)):
            label = _decode_text(raw, source, index, label_field)
        elif isinstance(raw, (int, np.integer)) and not isinstance(raw, bool):
            value = int(raw)
            if value < 0:
                label = None
            elif names:
                if value >= len(names):
                    raise DataError(
                        f"{source}, record {index}, field {label_field!r}: label id {value} is out of range "
                        f"for the class names {names}."
                    )
                label = names[value]
            else:
                label = str(value)
        else:
            raise DataError(
                f"{source}, record {index}, field {label_field!r}: unsupported label value {raw!r} "
                f"({type(raw).__name__}); the label feature must be an integer or string."
            )
        records.append(Record(text, label, source, index, text_field, label_field))
    return records
