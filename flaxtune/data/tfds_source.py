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
once.
"""

from __future__ import annotations

import logging

import numpy as np

from .readers import DataError, Record

__all__ = ["read_tfds", "hide_accelerators_from_tf"]

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
        builder.download_and_prepare()
    try:
        ds = builder.as_dataset(split=split, shuffle_files=False)
    except AssertionError:
        # tfds signals "not prepared in data_dir" with an AssertionError.
        raise DataError(
            f"{source}: dataset {name!r} is not prepared in data_dir={data_dir if data_dir else 'None (tfds default)'} "
            f"(looked in {builder.data_dir}). Nothing is downloaded with download=False: set data.tfds_download=True "
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
        records.append(Record(text=text, label=label, source=source, line=index))
    return records
