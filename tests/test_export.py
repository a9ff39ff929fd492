"""Hugging Face export and import: a flaxtune checkpoint -> GPT2ForSequenceClassification folder
(loaded by PyTorch transformers with the same logits), and such a folder -> flaxtune
(Classifier.from_hf, the eval/predict CLI, further training)."""

import json
import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from flaxtune import cli, hub
from flaxtune.checkpoint import Checkpoints, tokenizer_dir
from flaxtune.data.tokenize import TokenizationError
from flaxtune.export import export_hf
from flaxtune.model import GPT2Classifier
from flaxtune.predict import Classifier
from flaxtune.weights import (ModelSource, dims_for, fit_pretrained_head, initial_params,
                              pretrained_head_labels)

from conftest import REPO, TOKENIZER_DIR, need_shared

LABELS = ["negative", "neutral", "positive"]
STEP = 7
MAX_LENGTH = 48
TEXTS = [
    "a gorgeous, moving film",
    "dull and lifeless",
    "the plot is thin , but the performances are so good that it hardly matters .",
    "ok",
    # longer than MAX_LENGTH tokens: truncated the same way on both sides
    "an epic, sprawling, sometimes baffling and often thrilling story of ambition, betrayal, "
    "loyalty and love, told across three decades, two continents and more subplots than any "
    "reasonable viewer could possibly keep track of, and yet, somehow, by the closing credits, "
    "every thread has been tied off",
]


def one_device():
    return jax.local_devices()[:1]


def torch_logits(model_dir_or_model, texts, tokenizer, truncation=False):
    import torch
    from transformers import GPT2ForSequenceClassification

    model = model_dir_or_model
    if not isinstance(model, torch.nn.Module):
        model = GPT2ForSequenceClassification.from_pretrained(str(model)).eval()
    enc = tokenizer(texts, padding=True, truncation=truncation, return_tensors="pt")
    assert tokenizer.padding_side == "right"
    with torch.no_grad():
        return model(**enc).logits.numpy()


@pytest.fixture(scope="module")
def workdir(tmp_path_factory, gpt2_tokenizer):
    """A checkpoint as train.py writes it: 3 named labels, non-trivial biases/LayerNorms."""
    from transformers import GPT2Config

    hf = GPT2Config(n_layer=2, n_embd=32, n_head=2, n_positions=64, vocab_size=50257)
    model = GPT2Classifier(dims_for(hf), len(LABELS))
    params = initial_params(model, ModelSource(hf, None), seed=0)
    rng = np.random.default_rng(0)

    def perturb(path, x):
        name = path[-1].key
        if name in ("bias", "scale"):
            x = x + 0.1 * rng.standard_normal(x.shape).astype(np.float32)
        if path[0].key == "score":
            x = x * 20.0  # logits well away from 0: the comparison is not vacuous
        return np.asarray(x, np.float32)

    params = jax.tree_util.tree_map_with_path(perturb, params)
    model_config = hf.to_dict()
    model_config.pop("transformers_version", None)
    meta = {"label_names": LABELS, "model_config": model_config, "max_length": MAX_LENGTH, "step": STEP,
            "dtype": "float32", "text_field": "sentence", "label_field": "label", "encoding": "utf-8",
            "eval_metrics": None, "config": {}}
    wd = tmp_path_factory.mktemp("run")
    ckpts = Checkpoints(wd)
    ckpts.save(STEP, params, {"count": np.zeros((1,), np.int32)}, meta)
    ckpts.close()
    gpt2_tokenizer.save_pretrained(str(tokenizer_dir(wd)))
    return wd


@pytest.fixture(scope="module")
def restored(workdir):
    return Classifier.restore(workdir, devices=one_device())


@pytest.fixture(scope="module")
def exported(workdir, tmp_path_factory):
    return export_hf(workdir, tmp_path_factory.mktemp("export") / "hf")


@pytest.fixture()
def named_hf_dir(torch_classifier_dir, tmp_path):
    """The PyTorch tutorial's kind of folder: fine-tuned classifier, named labels, tokenizer saved."""
    src, torch_model = torch_classifier_dir
    dst = tmp_path / "hf_named"
    shutil.copytree(src, dst)
    for f in need_shared(TOKENIZER_DIR).iterdir():
        shutil.copy(f, dst / f.name)
    set_labels(dst, ["negative", "positive"])
    return dst, torch_model


def set_labels(folder, names):
    cfg = json.loads((folder / "config.json").read_text())
    cfg["id2label"] = {str(i): n for i, n in enumerate(names)}
    cfg["label2id"] = {n: i for i, n in enumerate(names)}
    (folder / "config.json").write_text(json.dumps(cfg))


def test_export_loads_in_transformers_with_same_logits(exported, restored):
    from safetensors import safe_open
    from transformers import AutoTokenizer, GPT2ForSequenceClassification

    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in exported.iterdir()}
    cfg = json.loads((exported / "config.json").read_text())
    assert cfg["architectures"] == ["GPT2ForSequenceClassification"]
    assert cfg["id2label"] == {"0": "negative", "1": "neutral", "2": "positive"}
    assert cfg["label2id"] == {"negative": 0, "neutral": 1, "positive": 2}
    assert cfg["pad_token_id"] == 50256
    assert cfg["flaxtune"] == {"step": STEP, "max_length": MAX_LENGTH, "text_field": "sentence",
                               "label_field": "label", "encoding": "utf-8"}
    with safe_open(str(exported / "model.safetensors"), framework="np") as f:
        assert f.metadata() == {"format": "pt"}
        assert f.get_tensor("score.weight").shape == (3, 32)
        assert all(f.get_tensor(k).dtype == np.float32 for k in f.keys())

    model, info = GPT2ForSequenceClassification.from_pretrained(str(exported), output_loading_info=True)
    assert {k: v for k, v in info.items() if v} == {}, info  # no missing/unexpected/mismatched keys
    assert model.config.num_labels == 3 and model.config.id2label[2] == "positive"

    tok = AutoTokenizer.from_pretrained(str(exported))
    assert tok.pad_token_id == 50256 and tok.model_max_length == MAX_LENGTH
    assert len(tok(TEXTS[-1])["input_ids"]) > MAX_LENGTH  # the long text really is truncated
    ref = torch_logits(model.eval(), TEXTS, tok, truncation=True)
    ours = restored.logits(TEXTS)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    assert np.abs(ref).max() > 0.1


def test_export_cli_writes_the_same_folder(workdir, exported, tmp_path):
    from safetensors.numpy import load_file

    out = tmp_path / "cli_hf"
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, "-m", "flaxtune", "export", "--checkpoint", str(workdir),
                           "--out", str(out), "--step", str(STEP)],
                          capture_output=True, text=True, env=env, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == str(out)
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in exported.iterdir())
    assert json.loads((out / "config.json").read_text()) == json.loads((exported / "config.json").read_text())
    a, b = load_file(str(out / "model.safetensors")), load_file(str(exported / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])

    bad = cli.main(["export", "--checkpoint", str(workdir), "--out", str(tmp_path / "x"), "--step", "99"])
    assert bad == 2


def test_round_trip_export_then_import(exported, restored, workdir):
    clf = Classifier.from_hf(exported, devices=one_device())
    assert clf.label_names == LABELS
    assert clf.max_length == MAX_LENGTH
    assert clf.meta["step"] == STEP and clf.meta["text_field"] == "sentence"
    np.testing.assert_allclose(clf.logits(TEXTS), restored.logits(TEXTS), atol=1e-5, rtol=0)
    assert [p.label for p in clf.predict(TEXTS)] == [p.label for p in restored.predict(TEXTS)]
    assert hub.is_hf_folder(exported) and not hub.is_hf_folder(workdir)
    assert type(Classifier.load(workdir, devices=one_device()).meta["step"]) is int


def test_from_hf_matches_torch_and_names_labels(named_hf_dir, gpt2_tokenizer):
    folder, torch_model = named_hf_dir
    clf = Classifier.from_hf(folder, devices=one_device())
    assert clf.label_names == ["negative", "positive"]
    assert clf.max_length == 64  # tokenizer's 1024, capped at the model's n_positions
    texts = TEXTS[:4]
    ref = torch_logits(torch_model, texts, gpt2_tokenizer)
    np.testing.assert_allclose(clf.logits(texts), ref, atol=1e-4, rtol=0)
    assert np.abs(ref).max() > 1e-2


def test_from_hf_default_labels_and_missing_tokenizer(torch_classifier_dir, tmp_path):
    folder, _ = torch_classifier_dir  # saved by save_pretrained: no tokenizer, default id2label
    with pytest.raises(TokenizationError, match="no tokenizer files.*--tokenizer"):
        Classifier.from_hf(folder)
    clf = Classifier.from_hf(folder, tokenizer=str(need_shared(TOKENIZER_DIR)), max_length=16,
                             devices=one_device())
    assert clf.label_names == ["LABEL_0", "LABEL_1"] and clf.max_length == 16
    with pytest.raises(ValueError, match="n_positions=64"):
        Classifier.from_hf(folder, tokenizer=str(TOKENIZER_DIR), max_length=65)
    # a bare backbone has no head to predict with
    from transformers import GPT2Model

    GPT2Model.from_pretrained(str(folder)).save_pretrained(tmp_path)
    with pytest.raises(hub.WeightsError, match=r"no classification head \(score.weight\)"):
        Classifier.from_hf(tmp_path, tokenizer=str(TOKENIZER_DIR))


def test_predict_and_eval_cli_accept_hf_folder(named_hf_dir, capsys, tmp_path):
    folder, _ = named_hf_dir
    expected = Classifier.from_hf(folder, devices=one_device()).predict(TEXTS[:2])
    assert cli.main(["predict", "--checkpoint", str(folder), *TEXTS[:2]]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split("\t")[0] for line in lines] == [p.label for p in expected]
    assert {p.label for p in expected} <= {"negative", "positive"}

    data = tmp_path / "dev.tsv"
    data.write_text("text\tlabel\n" + "".join(f"{p.text}\t{p.label}\n" for p in expected))
    assert cli.main(["eval", "--checkpoint", str(folder), "--data", str(data)]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["accuracy"] == 1.0 and result["num_examples"] == 2 and result["step"] is None
    # a step or a missing folder is refused with a message, not a traceback
    assert cli.main(["predict", "--checkpoint", str(folder), "--step", "3", "x"]) == 2
    assert "Hugging Face folder" in capsys.readouterr().err
    assert cli.main(["predict", "--checkpoint", str(tmp_path), "x"]) == 2
    assert "neither a train workdir" in capsys.readouterr().err


def test_training_from_hf_folder_keeps_checks_and_reorders_head(named_hf_dir):
    folder, torch_model = named_hf_dir
    source = ModelSource(hub.load_hf_config(folder), folder)
    dims = dims_for(source.hf_config)
    head = torch_model.score.weight.detach().numpy().T  # (n_embd, 2), columns = negative, positive

    with pytest.raises(hub.WeightsError, match=r"trained classification head \(score.weight\) for 2 labels "
                                               r"\['negative', 'positive'\], but this run's data has 3"):
        initial_params(GPT2Classifier(dims, 3), source, seed=0, label_names=["a", "b", "c"])

    pre, path = hub.read_pretrained_params(folder)
    same = fit_pretrained_head(pre, folder, 2, ["negative", "positive"], path)
    np.testing.assert_array_equal(same["score"]["kernel"], head)
    set_labels(folder, ["positive", "negative"])  # the folder's class 0 is "positive"
    assert pretrained_head_labels(folder) == ["positive", "negative"]
    unnamed = fit_pretrained_head(pre, folder, 2, None, path)  # what train.py passes today: kept by id
    np.testing.assert_array_equal(unnamed["score"]["kernel"], head)
    swapped = initial_params(GPT2Classifier(dims, 2), source, seed=0, label_names=["negative", "positive"])
    np.testing.assert_array_equal(swapped["score"]["kernel"], head[:, ::-1])
    np.testing.assert_array_equal(swapped["transformer"]["ln_f"]["bias"], pre["transformer"]["ln_f"]["bias"])
