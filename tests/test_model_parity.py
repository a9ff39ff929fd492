"""flaxtune's GPT-2 classifier against transformers' PyTorch GPT2ForSequenceClassification."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import serialization, traverse_util

from flaxtune import hub
from flaxtune.model import GPT2Classifier, FlaxGPT2, last_token_index, position_ids_from_mask
from flaxtune.weights import ModelSource, dims_for, initial_params, model_source

TEXTS = [
    "a gorgeous, moving film",
    "dull and lifeless",
    "the plot is thin , but the performances are so good that it hardly matters .",
    "ok",
]


def right_padded(tokenizer, texts):
    enc = tokenizer(texts, padding=True, return_tensors="np")
    return enc["input_ids"].astype(np.int32), enc["attention_mask"].astype(np.int32)


def load_via_hub_path(model_dir):
    """The same code path `init=pretrained, model=gpt2` takes (hub id -> local folder)."""
    import ml_collections

    cfg = ml_collections.ConfigDict({"init": "pretrained", "model": str(model_dir)})
    source = model_source(cfg)
    model = GPT2Classifier(dims_for(source.hf_config), 2)
    return model, source


def test_logits_match_transformers_on_right_padded_batch(torch_classifier_dir, gpt2_tokenizer):
    import torch

    model_dir, torch_model = torch_classifier_dir
    ids, mask = right_padded(gpt2_tokenizer, TEXTS)
    assert len(set(mask.sum(1).tolist())) == len(TEXTS)  # really different lengths
    assert (ids[mask == 0] == gpt2_tokenizer.eos_token_id).all()  # eos pads on the right

    model, source = load_via_hub_path(model_dir)
    params = initial_params(model, source, seed=123)
    ours = np.asarray(model.apply({"params": params}, ids, mask))
    with torch.no_grad():
        ref = torch_model(input_ids=torch.tensor(ids, dtype=torch.long),
                          attention_mask=torch.tensor(mask)).logits.numpy()
    assert ours.shape == (4, 2)
    np.testing.assert_allclose(ours, ref, atol=1e-4, rtol=0)
    assert np.abs(ref).max() > 1e-2  # not a vacuous comparison


def test_head_is_loaded_when_present_and_only_head_is_new_otherwise(torch_classifier_dir, tmp_path, caplog):
    from transformers import GPT2Model

    model_dir, torch_model = torch_classifier_dir
    model, source = load_via_hub_path(model_dir)
    pre, _ = hub.read_pretrained_params(model_dir)
    np.testing.assert_array_equal(pre["score"]["kernel"], torch_model.score.weight.detach().numpy().T)

    # A bare backbone (what `gpt2` on the hub is): the head and only the head is new.
    torch_model.transformer.save_pretrained(tmp_path)
    assert isinstance(torch_model.transformer, GPT2Model)
    source = ModelSource(hub.load_hf_config(tmp_path), tmp_path)
    with caplog.at_level("INFO", logger="flaxtune.weights"):
        params = initial_params(model, source, seed=0)
    assert "newly initialised: score/kernel" in caplog.text
    np.testing.assert_array_equal(params["transformer"]["h"]["1"]["mlp"]["c_fc"]["kernel"],
                                  torch_model.transformer.h[1].mlp.c_fc.weight.detach().numpy().T)


def test_flax_msgpack_folder_loads_same_weights(torch_classifier_dir, tmp_path, gpt2_tokenizer):
    """A Hugging Face Flax folder (flax_model.msgpack, backbone at the root) gives the same model."""
    import shutil

    model_dir, _ = torch_classifier_dir
    model, source = load_via_hub_path(model_dir)
    params = initial_params(model, source, seed=0)
    shutil.copy(model_dir / "config.json", tmp_path / "config.json")
    (tmp_path / "flax_model.msgpack").write_bytes(serialization.msgpack_serialize(
        jax.tree.map(np.asarray, params["transformer"])))
    loaded, path = hub.read_pretrained_params(tmp_path)
    assert path.endswith("flax_model.msgpack")
    merged, new = hub.merge_pretrained(params, loaded, path)
    assert new == ["score/kernel"]
    flat_a, flat_b = traverse_util.flatten_dict(params), traverse_util.flatten_dict(merged)
    for k in flat_a:
        if k[0] == "transformer":
            np.testing.assert_array_equal(flat_a[k], flat_b[k])


def test_sentence_logits_same_alone_and_in_padded_batch(torch_classifier_dir, gpt2_tokenizer):
    model_dir, _ = torch_classifier_dir
    model, source = load_via_hub_path(model_dir)
    params = initial_params(model, source, seed=0)
    apply = jax.jit(lambda i, m: model.apply({"params": params}, i, m))
    ids, mask = right_padded(gpt2_tokenizer, TEXTS)
    batch = np.asarray(apply(ids, mask))
    for k, text in enumerate(TEXTS):
        i1, m1 = right_padded(gpt2_tokenizer, [text])
        np.testing.assert_allclose(np.asarray(apply(i1, m1))[0], batch[k], atol=1e-5, rtol=0)


def test_pooling_uses_mask_not_pad_id(gpt2_tokenizer):
    # "<|endoftext|>" inside the text has the pad id but is a real token.
    enc = gpt2_tokenizer(["good <|endoftext|> film", "good"], padding=True, return_tensors="np")
    mask = jnp.asarray(enc["attention_mask"])
    n0 = int(enc["attention_mask"][0].sum())
    assert int(last_token_index(mask)[0]) == n0 - 1
    assert int(last_token_index(mask)[1]) == 0
    np.testing.assert_array_equal(position_ids_from_mask(jnp.array([[1, 1, 1, 0, 0]]))[0], [0, 1, 2, 2, 2])


def test_bad_checkpoint_shapes_are_named(torch_classifier_dir):
    model_dir, _ = torch_classifier_dir
    model, source = load_via_hub_path(model_dir)
    params = initial_params(model, source, seed=0)
    pre, _ = hub.read_pretrained_params(model_dir)
    pre["transformer"]["wpe"]["embedding"] = pre["transformer"]["wpe"]["embedding"][:10]
    with pytest.raises(hub.WeightsError, match=r"transformer/wpe/embedding has shape \(10, 64\)"):
        hub.merge_pretrained(params, pre, "x/model.safetensors")
    del pre["transformer"]["ln_f"]
    with pytest.raises(hub.WeightsError, match="ln_f"):
        hub.merge_pretrained(params, pre, "x/model.safetensors")


def test_torch_state_round_trip(torch_classifier_dir):
    model_dir, torch_model = torch_classifier_dir
    pre, _ = hub.read_pretrained_params(model_dir)
    back = hub.torch_state_from_params(pre)
    ref = {k: v.detach().numpy() for k, v in torch_model.state_dict().items() if not k.endswith((".attn.bias", ".attn.masked_bias"))}
    assert set(back) == set(ref)
    for k in ref:
        np.testing.assert_array_equal(back[k], ref[k])


def test_bfloat16_compute_keeps_float32_params_and_logits(torch_classifier_dir, gpt2_tokenizer):
    """Mixed precision: bf16 matmuls, fp32 master weights, fp32 logits close to the fp32 model's."""
    model_dir, _ = torch_classifier_dir
    model, source = load_via_hub_path(model_dir)
    params = initial_params(model, source, seed=0)
    ids, mask = right_padded(gpt2_tokenizer, TEXTS)
    fp32 = np.asarray(model.apply({"params": params}, ids, mask))
    bf16_model = GPT2Classifier(model.dims, 2, dtype=jnp.bfloat16)
    out = bf16_model.apply({"params": params}, ids, mask)
    assert out.dtype == jnp.float32
    assert all(x.dtype == np.float32 for x in jax.tree.leaves(params))
    np.testing.assert_allclose(np.asarray(out), fp32, atol=0.05 * np.abs(fp32).max())
    assert not np.array_equal(np.asarray(out), fp32)  # really computed in bf16
