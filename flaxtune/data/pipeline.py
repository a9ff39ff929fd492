"""Batches: tf.data for training, plain numpy for eval/predict.

Every batch is a dict of numpy arrays with a leading device axis:
`input_ids`, `attention_mask` (D, B/D, T) and `labels`, `weights` (D, B/D).
T is the smallest *bucket* length that fits the batch's longest text, so
only a handful of shapes are ever compiled and short texts are not padded
to `max_length`. Packed training batches (`pack=True`, the default in
configs/default.py) are (D, R, max_length) rows holding several texts each,
plus `segment_ids`, `position_ids` and `pool_index` (see `packed_batch`).
"""

from __future__ import annotations

from typing import Iterator

import numpy as np

from flaxtune.data.tokenize import Tokenized

def tf_cpu_only():
    """TensorFlow with every accelerator hidden from it (it only runs tf.data here)."""
    from flaxtune.data.tfds_source import hide_accelerators_from_tf

    hide_accelerators_from_tf()
    import tensorflow as tf

    return tf


def bucket_lengths(max_length: int) -> list[int]:
    """The padded lengths batches may have: a few fixed shapes, so compiles stay few.

    Multiples of 8 up to 32, then steps of x1.5 / x1.33 (48, 64, 96, 128, 192, ...),
    capped by max_length, which is always the last bucket. For max_length=64:
    [8, 16, 24, 32, 48, 64].
    """
    candidates = [8, 16, 24, 32]
    while candidates[-1] < max_length:
        candidates += [candidates[-1] * 3 // 2, candidates[-1] * 2]
    return sorted({b for b in candidates if b < max_length} | {max_length})


def bucket_for(length: int, buckets: list[int]) -> int:
    for b in buckets:
        if length <= b:
            return b
    raise ValueError(f"length {length} exceeds the largest bucket {buckets[-1]}")


def steps_per_epoch(num_examples: int, global_batch: int) -> int:
    """Full batches per epoch: the last `num_examples % global_batch` examples wait for the next."""
    return num_examples // global_batch


def epoch_seed(seed: int, epoch: int) -> int:
    return (seed * 1_000_003 + epoch) % (2**31 - 1)


def pack_examples(lengths, row_length: int) -> list[list[int]]:
    """First-fit decreasing: rows of at most `row_length` tokens, each a list of example indices."""
    rows, free = [], []
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        n = lengths[i]
        for r, space in enumerate(free):
            if n <= space:
                rows[r].append(i)
                free[r] -= n
                break
        else:
            rows.append([i])
            free.append(row_length - n)
    return rows


def packed_batch(seqs: list[np.ndarray], labels: np.ndarray, *, num_devices: int,
                 row_length: int) -> dict:
    """A global batch of examples packed into rows of `row_length` tokens, per device.

    Each device packs its own B/D examples (first-fit decreasing); every device gets the
    largest row count R among them (spare rows are all padding), so shapes are equal across
    devices: `input_ids`, `attention_mask`, `segment_ids` (1, 2, ... per example in a row,
    0 = padding), `position_ids` (0, 1, ... within each example) are (D, R, row_length);
    `pool_index` (D, B/D) is the flat index into R * row_length of each example's last token
    and `labels` (D, B/D) are in the examples' original order.
    """
    per = len(seqs) // num_devices
    plans = [pack_examples([len(x) for x in seqs[d * per:(d + 1) * per]], row_length)
             for d in range(num_devices)]
    r_max = max(len(p) for p in plans)
    shape = (num_devices, r_max, row_length)
    ids, seg, pos = (np.zeros(shape, np.int32) for _ in range(3))
    pool = np.zeros((num_devices, per), np.int32)
    for d, plan in enumerate(plans):
        for r, row in enumerate(plan):
            offset = 0
            for k, i in enumerate(row):
                x = seqs[d * per + i]
                n = len(x)
                ids[d, r, offset:offset + n] = x
                seg[d, r, offset:offset + n] = k + 1
                pos[d, r, offset:offset + n] = np.arange(n)
                pool[d, i] = r * row_length + offset + n - 1
                offset += n
    return {"input_ids": ids, "attention_mask": (seg > 0).astype(np.int32), "segment_ids": seg,
            "position_ids": pos, "pool_index": pool,
            "labels": np.asarray(labels, np.int32).reshape(num_devices, per)}


def train_batches(data: Tokenized, *, global_batch: int, num_devices: int, seed: int,
                  epoch: int, buckets: list[int], skip_batches: int = 0,
                  shuffle_buffer: int = 0, group_by_length: bool = True,
                  pack: bool = False) -> Iterator[dict]:
    """One epoch of shuffled training batches (the last partial batch is dropped).

    The order depends only on (seed, epoch), so a run can restart mid-epoch
    by skipping the batches it has already seen. With `pack`, batches are random
    (not grouped by length) and each is packed into rows of the largest bucket's
    length (`packed_batch`): the same examples per step, almost no padding.
    """
    if pack:
        for batch in train_batches(data, global_batch=global_batch, num_devices=1, seed=seed,
                                   epoch=epoch, buckets=buckets, skip_batches=skip_batches,
                                   shuffle_buffer=shuffle_buffer, group_by_length=False):
            mask = batch["attention_mask"][0].astype(bool)
            seqs = [row[m] for row, m in zip(batch["input_ids"][0], mask)]
            yield packed_batch(seqs, batch["labels"][0], num_devices=num_devices,
                               row_length=buckets[-1])
        return
    tf = tf_cpu_only()
    lengths = data.lengths
    flat = np.concatenate(data.ids) if len(data) else np.zeros((0,), np.int32)
    ragged = tf.RaggedTensor.from_row_lengths(flat, lengths)
    ds = tf.data.Dataset.from_tensor_slices({"ids": ragged, "labels": data.labels})
    buffer = shuffle_buffer if shuffle_buffer > 0 else len(data)
    ds = ds.shuffle(buffer, seed=epoch_seed(seed, epoch), reshuffle_each_iteration=False)
    bucket_table = tf.constant(buckets, dtype=tf.int32)
    if group_by_length:
        # Batches of texts from one length bucket: padding stays within that bucket.
        # The buckets' leftovers at the end of the epoch are merged into mixed
        # batches, so, as with random batches, only the last n % batch are dropped.
        def bucket_id(example):
            n = tf.cast(tf.shape(example["ids"])[0], tf.int32)
            return tf.cast(tf.argmax(tf.cast(bucket_table >= n, tf.int32)), tf.int64)

        def size(batch):
            return tf.shape(batch["labels"])[0]

        grouped = ds.group_by_window(key_func=bucket_id,
                                     reduce_func=lambda _, w: w.batch(global_batch),
                                     window_size=global_batch)
        full = grouped.filter(lambda b: size(b) == global_batch)
        leftovers = grouped.filter(lambda b: size(b) < global_batch).unbatch()
        ds = full.concatenate(leftovers.batch(global_batch, drop_remainder=True))
    else:
        ds = ds.batch(global_batch, drop_remainder=True)
    if skip_batches:
        ds = ds.skip(skip_batches)
    per_device = global_batch // num_devices

    def to_dense(batch):
        ids = batch["ids"]
        if not isinstance(ids, tf.RaggedTensor):
            ids = tf.RaggedTensor.from_tensor(ids, lengths=batch["length"])
        longest = tf.cast(tf.reduce_max(ids.row_lengths()), tf.int32)
        target = tf.gather(bucket_table, tf.argmax(tf.cast(bucket_table >= longest, tf.int32)))
        dense = ids.to_tensor(default_value=0, shape=[global_batch, target])
        mask = tf.sequence_mask(ids.row_lengths(), target, dtype=tf.int32)
        return {
            "input_ids": tf.reshape(dense, [num_devices, per_device, -1]),
            "attention_mask": tf.reshape(mask, [num_devices, per_device, -1]),
            "labels": tf.reshape(tf.cast(batch["labels"], tf.int32), [num_devices, per_device]),
        }

    ds = ds.map(to_dense, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    yield from ds.as_numpy_iterator()


def eval_batches(data: Tokenized, *, global_batch: int, num_devices: int,
                 buckets: list[int], by_length: bool = True) -> Iterator[dict]:
    """Batches covering every example exactly once; the last one is padded with weight-0 rows.

    With `by_length`, examples are taken in order of length (so each batch pads
    to a small bucket); `index` maps rows back to input positions (-1 for padding).
    """
    n = len(data)
    per_device = global_batch // num_devices
    order = np.argsort(data.lengths, kind="stable") if by_length else np.arange(n)
    for start in range(0, n, global_batch):
        picked = order[start:start + global_batch]
        rows = [data.ids[i] for i in picked]
        t = bucket_for(max(len(r) for r in rows), buckets)
        ids = np.zeros((global_batch, t), np.int32)
        mask = np.zeros((global_batch, t), np.int32)
        for i, r in enumerate(rows):
            ids[i, :len(r)] = r
            mask[i, :len(r)] = 1
        mask[len(rows):, 0] = 1  # padding rows: one dummy token, so no row is all-masked
        weights = np.zeros((global_batch,), np.float32)
        weights[:len(rows)] = 1.0
        labels = np.zeros((global_batch,), np.int32)
        if data.labels is not None:
            labels[:len(rows)] = data.labels[picked]
        index = np.full((global_batch,), -1, np.int64)
        index[:len(rows)] = picked
        yield {
            "input_ids": ids.reshape(num_devices, per_device, t),
            "attention_mask": mask.reshape(num_devices, per_device, t),
            "labels": labels.reshape(num_devices, per_device),
            "weights": weights.reshape(num_devices, per_device),
            "index": index,
        }
