"""Shared fixtures. Simulates 8 CPU devices (set before JAX is imported)."""

import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
TOKENIZER_DIR = SHARED / "tokenizers" / "gpt2"
SST2_DIR = SHARED / "data" / "sst2"


def need_shared(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path} not present (../shared is provided on CI and dev machines)")
    return path


def write_sst2_slice(folder: Path, n_train: int, n_dev: int) -> Path:
    """The first rows of the real SST-2 train/dev files (header kept), for small real runs."""
    need_shared(SST2_DIR)
    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        lines = (SST2_DIR / name).read_text(encoding="utf-8").splitlines()
        (folder / name).write_text("\n".join(lines[:n + 1]) + "\n", encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    from flaxtune.data.tokenize import load_tokenizer

    return load_tokenizer(str(need_shared(TOKENIZER_DIR)))


@pytest.fixture(scope="session")
def tiny_hf_config():
    """A small GPT-2 shape with the real vocabulary (so the real tokenizer fits)."""
    from transformers import GPT2Config

    return GPT2Config(n_layer=2, n_embd=64, n_head=4, n_positions=64, vocab_size=50257,
                      num_labels=2, pad_token_id=50256)


@pytest.fixture(scope="session")
def torch_classifier_dir(tmp_path_factory, tiny_hf_config):
    """A random GPT2ForSequenceClassification saved by transformers (model.safetensors)."""
    torch = pytest.importorskip("torch")
    from transformers import GPT2ForSequenceClassification

    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(tiny_hf_config).eval()
    # Non-trivial LayerNorm and bias values, so a swapped name or transpose cannot hide.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    out = tmp_path_factory.mktemp("hf_cls")
    model.save_pretrained(out)
    return out, model


def trained_params(strategy, state, tx):
    """A trained state's parameters on the host, as AdamW has them (`train.materialize`:
    the row-sparse optimizer leaves the token embedding's params stale between read-outs)."""
    import functools

    from flaxtune.train import materialize

    state = strategy.compile_state_update(functools.partial(materialize, tx=tx))(state)
    return strategy.to_host(state).params
