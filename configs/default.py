"""Defaults for every flaxtune run; other configs start from this one.

Override any field on the command line: --config.train.learning_rate=3e-5
"""

import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.seed = 0
    # "pretrained": weights from `model` (hub id such as gpt2, distilgpt2,
    # gpt2-medium, or a local Hugging Face folder). "scratch": random weights
    # shaped by `scratch_model` (offline runs, tests).
    c.init = "pretrained"
    c.model = "gpt2"
    c.scratch_model = ml_collections.ConfigDict(dict(
        n_layer=4, n_embd=256, n_head=4, n_positions=128, vocab_size=50257))
    # Dropout for resid/embd/attn; negative keeps the model config's (0.1 for GPT-2).
    c.dropout = -1.0
    c.tokenizer = ""          # hub id or folder; empty = same as `model`
    c.max_length = 128         # tokens per text after truncation (<= n_positions)
    c.dtype = "float32"        # compute dtype; parameters and optimizer stay float32

    c.data = ml_collections.ConfigDict()
    c.data.source = "files"    # "files" (TSV/CSV/JSONL) or "tfds"
    c.data.train_file = ""
    c.data.eval_file = ""
    # No eval file (e.g. IMDB's one labelled file): hold out this fraction of train_file as the
    # eval set instead, per label (stratified), chosen with split_seed. 0 = use eval_file.
    c.data.eval_fraction = 0.0
    c.data.split_seed = 0
    c.data.file_format = ""    # "" = from the extension: .tsv, .csv, .jsonl
    c.data.encoding = "utf-8"
    c.data.text_field = "text"
    c.data.label_field = "label"
    c.data.skip_invalid = False  # drop (and count) empty texts / missing labels instead of failing
    c.data.tfds_name = ""      # e.g. glue/sst2, imdb_reviews
    c.data.tfds_data_dir = ""  # "" = tfds default (~/tensorflow_datasets)
    c.data.tfds_download = True
    c.data.train_split = "train"
    c.data.eval_split = "validation"
    # Batch texts of similar length together (padding only to the batch's length
    # bucket: 8, 16, 24, 32, 48, 64, ...); False pads random batches.
    c.data.group_by_length = True
    # Pack each batch's texts into rows of max_length tokens (several texts per row, attention
    # kept within each text): the same texts per step with almost no padding. Batches are then
    # random (group_by_length applies only with pack=False).
    c.data.pack = True
    # With pack: exchange examples between nearby batches (within 32 batches) so that each
    # batch's texts fill their rows (~7% padding -> <1% on SST-2). Batch sizes do not change.
    c.data.fill_rows = True

    c.train = ml_collections.ConfigDict()
    c.train.batch_size = 32          # global batch: per-device batch x devices
    c.train.eval_batch_size = 64     # global
    c.train.num_epochs = 3.0
    c.train.num_train_steps = -1     # > 0 overrides num_epochs
    c.train.learning_rate = 2e-5
    c.train.warmup_ratio = 0.06      # of all steps, linear warm-up then linear decay to 0
    c.train.weight_decay = 0.01      # not applied to biases and LayerNorm scales
    c.train.adam_b1 = 0.9
    c.train.adam_b2 = 0.999
    c.train.adam_eps = 1e-8
    c.train.grad_clip_norm = 1.0     # 0 disables clipping
    c.train.grad_accum_steps = 1     # optimizer update every k batches
    # Keep the token embedding's gradient as one row per token (same AdamW update, no dense
    # vocab x n_embd gradient per step); used when grad_accum_steps == 1.
    c.train.row_sparse_embedding = True
    c.train.num_devices = 0          # 0 = all local devices
    # Data parallelism over the local devices: "shard_map" (jit + shard_map; the donated state is
    # updated in place) or "pmap" (jax.pmap; XLA copies the state every step). Same arithmetic.
    c.train.strategy = "shard_map"
    c.train.log_every_steps = 100
    c.train.eval_every_steps = 0     # 0 = after each epoch (and at the end)
    c.train.checkpoint_every_steps = 0  # 0 = after each eval
    c.train.max_checkpoints_to_keep = 2  # the latest N ...
    c.train.keep_best_metric = "accuracy"  # ... plus the best by this eval metric ("" = none)
    c.train.keep_best_mode = "max"         # "max" (accuracy, macro_f1) or "min" (loss)
    return c
