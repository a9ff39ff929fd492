"""The real loop on a tiny model and a slice of SST-2: pmap on 8 simulated devices vs 1,
checkpoint contents, restore on one device, and the eval/predict CLI in new processes."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

from flaxtune import config as config_lib
from flaxtune.checkpoint import Checkpoints
from flaxtune.data.readers import read_records
from flaxtune.predict import Classifier
from flaxtune.train import train_and_evaluate

from conftest import REPO, TOKENIZER_DIR, need_shared, write_sst2_slice

STEPS = 12


@pytest.fixture(scope="module")
def sst2_slice(tmp_path_factory):
    # 100 dev rows: not a multiple of the eval batch, so the last batch is padded
    return write_sst2_slice(tmp_path_factory.mktemp("sst2"), n_train=400, n_dev=100)


def tiny_config(data_dir, **train):
    c = config_lib.load_config_file(str(REPO / "configs" / "sst2_local.py"))
    c.data.train_file = str(data_dir / "train.tsv")
    c.data.eval_file = str(data_dir / "dev.tsv")
    c.tokenizer = str(need_shared(TOKENIZER_DIR))
    c.scratch_model.update(n_layer=2, n_embd=32, n_head=2, n_positions=32)
    c.max_length = 32
    c.dropout = 0.0
    c.train.update(dict(dict(batch_size=16, eval_batch_size=16, num_train_steps=STEPS, log_every_steps=1,
                             learning_rate=1e-3, warmup_ratio=0.1), **train))
    return c


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def run8(sst2_slice, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("run8")
    metrics = train_and_evaluate(tiny_config(sst2_slice), workdir)
    return workdir, metrics


def test_eight_devices_and_one_give_the_same_losses(run8, sst2_slice, tmp_path):
    workdir8, _ = run8
    metrics1 = train_and_evaluate(tiny_config(sst2_slice, num_devices=1), tmp_path)
    loss8 = [r["loss"] for r in read_jsonl(workdir8 / "train_metrics.jsonl")]
    loss1 = [r["loss"] for r in read_jsonl(tmp_path / "train_metrics.jsonl")]
    assert len(loss8) == len(loss1) == STEPS
    assert min(r["grad_norm"] for r in read_jsonl(workdir8 / "train_metrics.jsonl")) > 0  # really updating
    np.testing.assert_allclose(loss8, loss1, rtol=2e-4, atol=0)
    np.testing.assert_allclose(read_jsonl(workdir8 / "eval_metrics.jsonl")[-1]["loss"], metrics1["loss"], rtol=1e-3)


def test_pmap_strategy_trains_like_the_default(run8, sst2_slice, tmp_path):
    """train.strategy=pmap (state with a device axis) on 8 devices: the losses, eval and saved
    parameters of the default shard_map run."""
    workdir8, metrics8 = run8
    metrics = train_and_evaluate(tiny_config(sst2_slice, strategy="pmap"), tmp_path)
    loss_default = [r["loss"] for r in read_jsonl(workdir8 / "train_metrics.jsonl")]
    loss_pmap = [r["loss"] for r in read_jsonl(tmp_path / "train_metrics.jsonl")]
    assert len(loss_pmap) == STEPS
    np.testing.assert_allclose(loss_pmap, loss_default, rtol=1e-4, atol=0)
    assert metrics["accuracy"] == metrics8["accuracy"]
    np.testing.assert_allclose(metrics["loss"], metrics8["loss"], rtol=1e-4)
    a = Classifier.restore(workdir8, devices=jax.local_devices()[:1]).logits(["a fine film", "bad"])
    b = Classifier.restore(tmp_path, devices=jax.local_devices()[:1]).logits(["a fine film", "bad"])
    np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-5)


def test_checkpoint_holds_what_predict_needs(run8):
    workdir, metrics = run8
    ckpts = Checkpoints(workdir, read_only=True)
    assert ckpts.latest_step() == STEPS
    meta = ckpts.read_meta()
    assert meta["label_names"] == ["0", "1"]
    assert meta["max_length"] == 32 and meta["step"] == STEPS
    assert meta["model_config"]["n_layer"] == 2 and meta["model_config"]["n_embd"] == 32
    assert meta["eval_metrics"]["accuracy"] == metrics["accuracy"]
    assert (workdir / "tokenizer" / "tokenizer.json").is_file()
    # saved without a device axis
    from flaxtune.weights import abstract_params
    from flaxtune.model import GPT2Classifier, GPT2Dims

    model = GPT2Classifier(GPT2Dims(n_layer=2, n_embd=32, n_head=2, n_positions=32), 2)
    params = ckpts.restore_params(abstract_params(model))
    assert params["transformer"]["wte"]["embedding"].shape == (50257, 32)
    ckpts.close()


def test_restore_on_one_device_reproduces_training_eval(run8, sst2_slice):
    workdir, metrics = run8
    assert metrics["num_examples"] == 100
    clf = Classifier.restore(workdir, devices=jax.local_devices()[:1])
    m = clf.evaluate(read_records(sst2_slice / "dev.tsv", text_field="sentence"))
    assert m["num_examples"] == 100
    assert m["accuracy"] == metrics["accuracy"]
    assert m["loss"] == pytest.approx(metrics["loss"], abs=1e-5)
    # and on 8 devices, with a padded last batch, the same predictions
    clf8 = Classifier.restore(workdir)
    texts = [r.text for r in read_records(sst2_slice / "dev.tsv", text_field="sentence")][:21]
    np.testing.assert_allclose(clf8.logits(texts, per_device_batch=2), clf.logits(texts, per_device_batch=4),
                               atol=1e-5)


def _cli(*args):
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}  # a fresh process, 1 CPU device
    return subprocess.run([sys.executable, "-m", "flaxtune", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=300)


def test_eval_cli_in_new_process_prints_json_last_line(run8, sst2_slice):
    workdir, metrics = run8
    out = _cli("eval", "--checkpoint", str(workdir), "--data", str(sst2_slice / "dev.tsv"))
    assert out.returncode == 0, out.stderr
    assert "read only" not in out.stderr  # Orbax's misleading read-only-manager warning is hidden
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["accuracy"] == metrics["accuracy"]
    assert result["num_examples"] == 100
    assert result["macro_f1"] == pytest.approx(metrics["macro_f1"], abs=1e-9)
    assert result["loss"] == pytest.approx(metrics["loss"], abs=1e-5)
    # the report shows each class, so imbalance is visible
    dev_labels = [r.label for r in read_records(sst2_slice / "dev.tsv", text_field="sentence")]
    assert {k: v["support"] for k, v in result["per_class"].items()} == {
        "0": dev_labels.count("0"), "1": dev_labels.count("1")}
    cm = result["confusion_matrix"]["rows_true_cols_predicted"]
    assert result["confusion_matrix"]["labels"] == ["0", "1"]
    assert (cm[0][0] + cm[1][1]) / 100 == pytest.approx(metrics["accuracy"])


def test_predict_cli_texts_and_file(run8, tmp_path):
    workdir, _ = run8
    clf = Classifier.restore(workdir, devices=jax.local_devices()[:1])
    texts = ["a gorgeous, moving film", "dull and lifeless", "ok"]
    expected = clf.predict(texts)
    out = _cli("predict", "--checkpoint", str(workdir), *texts[:2])
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 2
    for line, p in zip(lines, expected):
        label, prob, text = line.split("\t")
        assert (label, text) == (p.label, p.text)
        assert float(prob) == pytest.approx(max(p.probs), abs=1e-4)
    (tmp_path / "in.jsonl").write_text("".join(json.dumps({"sentence": t}) + "\n" for t in texts))
    out = _cli("predict", "--checkpoint", str(workdir), "--input", str(tmp_path / "in.jsonl"),
               "--output", str(tmp_path / "preds.jsonl"))
    assert out.returncode == 0, out.stderr
    rows = read_jsonl(tmp_path / "preds.jsonl")
    assert [r["text"] for r in rows] == texts
    assert [r["label"] for r in rows] == [p.label for p in expected]
    for r, p in zip(rows, expected):
        assert list(r["probs"]) == ["0", "1"]
        np.testing.assert_allclose(list(r["probs"].values()), p.probs, atol=1e-5)


def test_eval_and_predict_input_errors_name_the_cli_flags(run8, tmp_path, capsys):
    from flaxtune.cli import main

    workdir, _ = run8
    bad = tmp_path / "reviews.tsv"
    bad.write_text("text\tlabel\ngreat\t1\n")
    assert main(["predict", "--checkpoint", str(workdir), "--input", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"error: {bad}, line 1: header is missing the text column 'sentence' (data.text_field)" in err
    assert ("(in `predict` the columns default to the ones used in training: text 'sentence'; "
            "set --text-field, --encoding and --format on the command line)") in err
    assert main(["eval", "--checkpoint", str(workdir), "--data", str(bad)]) == 2
    assert "text 'sentence', label 'label'; set --text-field / --label-field" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(workdir), "--data", str(tmp_path / "nope.tsv")]) == 2
    assert f"error: {tmp_path / 'nope.tsv'}: file not found (relative paths are from " in capsys.readouterr().err
    # predicts with the flag; and a command line with neither texts nor --input is an error too
    assert main(["predict", "--checkpoint", str(workdir), "--input", str(bad), "--text-field", "text"]) == 0
    assert capsys.readouterr().out.startswith(("0\t", "1\t"))
    assert main(["predict", "--checkpoint", str(workdir)]) == 2
    assert "error: predict: give texts as arguments or --input FILE (one of the two)" in capsys.readouterr().err


def test_workdir_of_a_different_run_is_refused(run8, sst2_slice):
    workdir, _ = run8
    c = tiny_config(sst2_slice)
    c.scratch_model.n_layer = 3
    with pytest.raises(config_lib.ConfigError, match=r"different run:\n  model_config.n_layer: checkpoint has 2, this run has 3\n"):
        train_and_evaluate(c, workdir)


def test_workdir_trained_on_other_texts_is_refused(run8, sst2_slice, tmp_path):
    """The row-sparse optimizer state holds rows for the training texts' token ids only, so a
    run on other texts cannot take over its checkpoints (refused before any compile)."""
    workdir, _ = run8
    lines = (sst2_slice / "train.tsv").read_text().splitlines()
    (tmp_path / "train.tsv").write_text("\n".join(lines[:1] + lines[50:]) + "\n")
    (tmp_path / "dev.tsv").write_text((sst2_slice / "dev.tsv").read_text())
    with pytest.raises(config_lib.ConfigError, match=r"different run:\n  embedding_rows.count: checkpoint has \d+, "
                                                     r"this run has \d+\n  embedding_rows.sha1: "):
        train_and_evaluate(tiny_config(tmp_path), workdir)


def test_indivisible_global_batch_fails_at_start(sst2_slice, tmp_path):
    with pytest.raises(config_lib.ConfigError, match="batch_size=12 is the global batch"):
        train_and_evaluate(tiny_config(sst2_slice, batch_size=12), tmp_path)
    assert not (tmp_path / "checkpoints").exists()


def test_eval_held_out_of_the_train_file(sst2_slice, tmp_path):
    """data.eval_fraction without an eval file: the run evaluates on the held-out 20% of each
    label and trains on the rest; a workdir trained on the whole file refuses it."""
    c = tiny_config(sst2_slice, num_train_steps=2)
    c.data.update(eval_file="", eval_fraction=0.2)
    labels = [r.label for r in read_records(sst2_slice / "train.tsv", text_field="sentence", label_field="label")]
    want = sum(int(round(0.2 * labels.count(lab))) for lab in set(labels))
    metrics = train_and_evaluate(c, tmp_path)
    assert metrics["num_examples"] == want
    meta = Checkpoints(tmp_path).read_meta()
    assert meta["eval_holdout"] == {"fraction": 0.2, "split_seed": 0}


def test_workdir_trained_on_the_whole_file_refuses_a_holdout_run(run8, sst2_slice):
    workdir, _ = run8
    c = tiny_config(sst2_slice)
    c.data.update(eval_file="", eval_fraction=0.2)
    with pytest.raises(config_lib.ConfigError, match=r"different run:\n(  .*\n)*  eval_holdout: checkpoint has None, "
                                                     r"this run has \{'fraction': 0.2, 'split_seed': 0\}\n"):
        train_and_evaluate(c, workdir)


def test_eval_of_the_file_a_holdout_run_trained_on_warns(sst2_slice, tmp_path, caplog, capsys):
    from flaxtune.cli import main

    c = tiny_config(sst2_slice, num_train_steps=1)
    c.data.update(eval_file="", eval_fraction=0.2)
    train_and_evaluate(c, tmp_path)
    with caplog.at_level("WARNING", logger="flaxtune"):
        assert main(["eval", "--checkpoint", str(tmp_path), "--data", str(sst2_slice / "train.tsv")]) == 0
    assert (f"{sst2_slice / 'train.tsv'} is the file this checkpoint trained on: 0.2 of each label was held out "
            "for eval (data.split_seed=0) and the rest trained on") in caplog.text
    assert json.loads(capsys.readouterr().out.splitlines()[-1])["num_examples"] == 400
    caplog.clear()
    with caplog.at_level("WARNING", logger="flaxtune"):
        assert main(["eval", "--checkpoint", str(tmp_path), "--data", str(sst2_slice / "dev.tsv")]) == 0
    assert "trained on" not in caplog.text
