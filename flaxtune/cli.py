"""`python -m flaxtune {train,eval,predict,export}`: a thin layer over the Python API."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys

TRAIN_EPILOG = """\
examples:
  # gpt2 from the hub, GLUE SST-2 from tensorflow-datasets
  python -m flaxtune train --config configs/sst2.py --workdir runs/sst2
  # offline: local files, a small GPT-2 trained from scratch
  python -m flaxtune train --config configs/sst2_local.py --workdir runs/local \\
      --config.data.train_file=../shared/data/sst2/train.tsv \\
      --config.data.eval_file=../shared/data/sst2/dev.tsv \\
      --config.tokenizer=../shared/tokenizers/gpt2

Any config field can be overridden with --config.FIELD=VALUE (e.g.
--config.train.learning_rate=3e-5, --config.train.batch_size=64); see
configs/default.py for every field. An existing --workdir with checkpoints
of the same run is resumed from its latest checkpoint.
"""


CHECKPOINT_HELP = ("the --workdir of a train run, or a Hugging Face GPT2ForSequenceClassification "
                   "folder (config.json + model.safetensors)")
TOKENIZER_HELP = "tokenizer folder or hub id, for a Hugging Face folder without tokenizer files"


def _setup_logging(verbose: bool = True) -> None:
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    for noisy in ("absl", "jax._src", "orbax", "tensorflow", "httpx", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m flaxtune",
                                description="Fine-tune GPT-2 for text classification with JAX/Flax.")
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,eval,predict,export}")

    t = sub.add_parser("train", help="train a classifier; checkpoints go to --workdir",
                       epilog=TRAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    t.add_argument("--config", required=True, help="config file with get_config(), e.g. configs/sst2.py")
    t.add_argument("--workdir", required=True, help="folder for checkpoints, tokenizer and metrics")

    e = sub.add_parser("eval", help="evaluate a checkpoint on a labelled file; last stdout line is JSON")
    e.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    e.add_argument("--data", required=True, help="labelled TSV, CSV or JSONL file")
    e.add_argument("--text-field", help="text column (default: the one used in training)")
    e.add_argument("--label-field", help="label column (default: the one used in training)")
    e.add_argument("--encoding", help="file encoding (default: the one used in training)")
    e.add_argument("--format", dest="file_format", choices=["tsv", "csv", "jsonl"],
                   help="file format (default: from the extension)")
    e.add_argument("--step", type=int, help="checkpoint step (default: latest)")
    e.add_argument("--batch-size", type=int, default=32, help="per-device batch size (default 32)")
    e.add_argument("--tokenizer", help=TOKENIZER_HELP)

    pr = sub.add_parser("predict", help="classify texts given as arguments or in a file")
    pr.add_argument("--checkpoint", required=True, help=CHECKPOINT_HELP)
    pr.add_argument("texts", nargs="*", help="texts to classify")
    pr.add_argument("--input", help="TSV, CSV or JSONL file with a text column (labels not needed)")
    pr.add_argument("--output", help="write JSONL {text, label, probs} here, in input order")
    pr.add_argument("--text-field", help="text column of --input (default: the one used in training)")
    pr.add_argument("--encoding", help="encoding of --input (default: the one used in training)")
    pr.add_argument("--format", dest="file_format", choices=["tsv", "csv", "jsonl"])
    pr.add_argument("--step", type=int, help="checkpoint step (default: latest)")
    pr.add_argument("--batch-size", type=int, default=32, help="per-device batch size (default 32)")
    pr.add_argument("--tokenizer", help=TOKENIZER_HELP)

    x = sub.add_parser("export", help="write a checkpoint as a Hugging Face GPT2ForSequenceClassification folder")
    x.add_argument("--checkpoint", required=True, help="the --workdir of a train run")
    x.add_argument("--out", required=True, help="folder for config.json, model.safetensors and the tokenizer")
    x.add_argument("--step", type=int, help="checkpoint step (default: latest)")
    return p


def _read(path, clf, args, require_label):
    from flaxtune.data.readers import DataError, read_records
    from flaxtune.data.validation import validate_records

    meta = clf.meta
    text_field = args.text_field or meta.get("text_field", "text")
    label_field = getattr(args, "label_field", None) or meta.get("label_field", "label")
    try:
        records = read_records(path, text_field=text_field, label_field=label_field,
                               encoding=args.encoding or meta.get("encoding", "utf-8"),
                               file_format=args.file_format, require_label=require_label)
        records, _ = validate_records(records, require_label=require_label)
    except DataError as e:
        # The reader's hints name config fields (data.text_field, ...); here they are flags.
        columns, flags = f"text {text_field!r}", "--text-field"
        if require_label:
            columns, flags = f"{columns}, label {label_field!r}", "--text-field / --label-field"
        raise DataError(f"{e}\n(in `{args.command}` the columns default to the ones used in training: "
                        f"{columns}; set {flags}, --encoding and --format on the command line)") from None
    return records


def cmd_train(args, overrides) -> int:
    from flaxtune import config as config_lib
    from flaxtune.train import train_and_evaluate

    config = config_lib.load_config_file(args.config)
    config_lib.apply_overrides(config, overrides)
    metrics = train_and_evaluate(config, args.workdir)
    print(json.dumps({k: metrics[k] for k in ("accuracy", "macro_f1", "loss", "num_examples", "step")}))
    return 0


def cmd_eval(args) -> int:
    from flaxtune.predict import Classifier

    clf = Classifier.load(args.checkpoint, step=args.step, tokenizer=args.tokenizer)
    records = _read(args.data, clf, args, require_label=True)
    _warn_if_trained_on(args.data, clf.meta, args.checkpoint)
    m = clf.evaluate(records, per_device_batch=args.batch_size)
    names = clf.label_names
    per_class = {name: {k: v[i] for k, v in m["per_class"].items()} for i, name in enumerate(names)}
    log = logging.getLogger("flaxtune")
    for name, row in zip(names, m["confusion_matrix"]):
        log.info("class %-12s %s  predicted as %s", name,
                 "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}"
                           for k, v in per_class[name].items()), dict(zip(names, row)))
    out = {k: m[k] for k in ("accuracy", "macro_f1", "loss", "num_examples")}
    out["step"] = clf.meta.get("step")
    out["per_class"] = per_class
    out["confusion_matrix"] = {"labels": names, "rows_true_cols_predicted": m["confusion_matrix"]}
    print(json.dumps(out))
    return 0


def _warn_if_trained_on(path, meta: dict, checkpoint) -> None:
    """`eval --data` given the very file a data.eval_fraction run trained on (held-out part
    and training part together): say so, since the metrics then mix seen and unseen texts."""
    holdout = meta.get("eval_holdout")
    train_file = ((meta.get("config") or {}).get("data") or {}).get("train_file")
    if not holdout or not train_file:
        return
    try:
        same = os.path.samefile(path, train_file)
    except OSError:  # the training file is not where it was (another machine, another folder)
        return
    if same:
        logging.getLogger("flaxtune").warning(
            "%s is the file this checkpoint trained on: %g of each label was held out for eval "
            "(data.split_seed=%d) and the rest trained on, so these metrics mix texts the model "
            "has seen with held-out ones. The held-out metrics are in %s/eval_metrics.jsonl.",
            path, holdout["fraction"], holdout["split_seed"], checkpoint)


def cmd_predict(args) -> int:
    from flaxtune.data.readers import DataError
    from flaxtune.predict import Classifier

    if bool(args.texts) == bool(args.input):
        raise DataError("predict: give texts as arguments or --input FILE (one of the two)")
    clf = Classifier.load(args.checkpoint, step=args.step, tokenizer=args.tokenizer)
    if args.input:
        texts = [r.text for r in _read(args.input, clf, args, require_label=False)]
    else:
        texts = list(args.texts)
        blank = [i + 1 for i, t in enumerate(texts) if not t.strip()]
        if blank:
            raise DataError(f"predict: text argument(s) {blank} are empty")
    preds = clf.predict(texts, per_device_batch=args.batch_size)
    if args.output:
        with open(args.output, "w", encoding="utf-8") as f:
            for p in preds:
                f.write(json.dumps({"text": p.text, "label": p.label,
                                    "probs": dict(zip(clf.label_names, p.probs))}, ensure_ascii=False) + "\n")
        logging.getLogger("flaxtune").info("wrote %d predictions to %s", len(preds), args.output)
    else:
        for p in preds:
            print(f"{p.label}\t{max(p.probs):.4f}\t{p.text}")
    return 0


def cmd_export(args) -> int:
    from flaxtune.export import ExportError, export_hf

    try:
        out = export_hf(args.checkpoint, args.out, step=args.step)
    except ExportError as e:
        raise SystemExit(f"export: {e}")
    print(out)
    return 0


def main(argv=None) -> int:
    from flaxtune.config import ConfigError, split_override_args

    from flaxtune.host_memory import keep_freed_memory

    keep_freed_memory()  # before JAX starts its threads
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        rest, overrides = split_override_args(argv)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    args = _parser().parse_args(rest)
    if overrides and args.command != "train":
        print("error: --config.* overrides only apply to train", file=sys.stderr)
        return 2
    _setup_logging()
    from flaxtune.checkpoint import CheckpointError
    from flaxtune.data.readers import DataError
    from flaxtune.data.tokenize import TokenizationError
    from flaxtune.hub import WeightsError

    from flaxtune.train import Preempted

    try:
        if args.command == "train":
            return cmd_train(args, overrides)
        if args.command == "eval":
            return cmd_eval(args)
        if args.command == "export":
            return cmd_export(args)
        return cmd_predict(args)
    except Preempted as e:
        print(f"flaxtune: {e}", file=sys.stderr)
        return 128 + e.signum
    except (ConfigError, DataError, TokenizationError, WeightsError, CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
