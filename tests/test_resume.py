"""Exact resume across real processes: SIGKILL mid-run, SIGTERM preemption, other device counts."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from flaxtune.checkpoint import Checkpoints
from flaxtune.model import GPT2Classifier, GPT2Dims
from flaxtune.train import train_and_evaluate
from flaxtune.weights import abstract_params

from conftest import REPO, TOKENIZER_DIR, need_shared, write_sst2_slice

STEPS = 40


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return write_sst2_slice(tmp_path_factory.mktemp("sst2_resume"), n_train=200, n_dev=40)  # 12 steps/epoch


def train_cmd(data_dir, workdir):
    """One command, used for the straight, the killed and the resumed runs alike (dropout on)."""
    return [sys.executable, "-m", "flaxtune", "train", "--config", "configs/sst2_local.py",
            "--workdir", str(workdir),
            f"--config.data.train_file={data_dir / 'train.tsv'}",
            f"--config.data.eval_file={data_dir / 'dev.tsv'}",
            f"--config.tokenizer={need_shared(TOKENIZER_DIR)}",
            "--config.scratch_model.n_layer=2", "--config.scratch_model.n_embd=32",
            "--config.scratch_model.n_head=2", "--config.scratch_model.n_positions=32",
            "--config.max_length=32", "--config.dropout=0.1",
            "--config.train.batch_size=16", "--config.train.eval_batch_size=16",
            f"--config.train.num_train_steps={STEPS}", "--config.train.learning_rate=1e-3",
            "--config.train.log_every_steps=1", "--config.train.eval_every_steps=12",
            "--config.train.checkpoint_every_steps=4", "--config.train.max_checkpoints_to_keep=2"]


def env_1cpu():
    return {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}


def losses(workdir):
    rows = [json.loads(x) for x in (workdir / "train_metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows], [r["loss"] for r in rows]


def final_params(workdir):
    model = GPT2Classifier(GPT2Dims(n_layer=2, n_embd=32, n_head=2, n_positions=32), 2)
    ckpts = Checkpoints(workdir, read_only=True)
    assert ckpts.latest_step() == STEPS
    return jax.device_get(ckpts.restore_params(abstract_params(model)))


def assert_same_params(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.fixture(scope="module")
def straight(data_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight")
    out = subprocess.run(train_cmd(data_dir, workdir), cwd=REPO, env=env_1cpu(), capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return workdir


def run_until(cmd, workdir, predicate, sig):
    """Starts a train process and sends `sig` once predicate(workdir) holds."""
    proc = subprocess.Popen(cmd, cwd=REPO, env=env_1cpu(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not predicate(workdir):
        assert proc.poll() is None, f"train exited early: {proc.communicate()[1][-3000:]}"
        assert time.time() < deadline, "timed out waiting to interrupt"
        time.sleep(0.05)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=300)
    return proc.returncode, err


def has_checkpoint(workdir):
    d = workdir / "checkpoints"
    return d.is_dir() and any(p.name.isdigit() and (p / "commit_success.txt").exists() for p in d.iterdir())


def test_sigkill_then_rerun_gives_the_same_parameters_and_losses(straight, data_dir, tmp_path):
    cmd = train_cmd(data_dir, tmp_path)
    code, _ = run_until(cmd, tmp_path, has_checkpoint, signal.SIGKILL)
    assert code == -signal.SIGKILL
    resumed_from = Checkpoints(tmp_path, read_only=True).latest_step()
    assert resumed_from < STEPS  # really killed mid-run
    out = subprocess.run(cmd, cwd=REPO, env=env_1cpu(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert f"resuming from" in out.stderr and f"at step {resumed_from}" in out.stderr
    steps_a, loss_a = losses(straight)
    steps_b, loss_b = losses(tmp_path)
    assert steps_a == steps_b == list(range(1, STEPS + 1))  # no step lost or logged twice
    np.testing.assert_allclose(loss_b, loss_a, rtol=1e-5)
    assert_same_params(final_params(tmp_path), final_params(straight))


def test_sigterm_saves_and_says_how_to_resume(straight, data_dir, tmp_path):
    cmd = train_cmd(data_dir, tmp_path)
    started = lambda w: (w / "train_metrics.jsonl").exists() and len(losses(w)[0]) >= 2
    code, err = run_until(cmd, tmp_path, started, signal.SIGTERM)
    assert code == 128 + signal.SIGTERM, err[-3000:]
    stopped_at = Checkpoints(tmp_path, read_only=True).latest_step()
    assert 2 <= stopped_at < STEPS
    assert f"stopped by SIGTERM after step {stopped_at}" in err
    assert "Rerun the same train command" in err
    assert losses(tmp_path)[0][-1] == stopped_at  # the checkpoint is the last step taken
    out = subprocess.run(cmd, cwd=REPO, env=env_1cpu(), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    np.testing.assert_allclose(losses(tmp_path)[1], losses(straight)[1], rtol=1e-5)
    assert_same_params(final_params(tmp_path), final_params(straight))


@pytest.fixture(scope="module")
def base8(data_dir, tmp_path_factory):
    """A workdir whose last checkpoint is step 8 of a 12-step epoch, trained on 8 devices."""
    from test_train_end_to_end import tiny_config

    base = tmp_path_factory.getbasetemp() / "resume8_base"
    train_and_evaluate(tiny_config(data_dir, num_train_steps=8), base)
    cont8 = base.parent / "resume8_cont8"  # resuming at its last step is a no-op that must run
    shutil.copytree(base, cont8)
    train_and_evaluate(tiny_config(data_dir, num_train_steps=8, num_devices=8), cont8)
    return base


@pytest.mark.parametrize("num_devices", [1, 4])
def test_checkpoint_from_8_devices_resumes_on_1_and_4(data_dir, base8, tmp_path_factory, num_devices):
    """Continue the 8-device run's checkpoint on fewer devices: same losses as on 8."""
    from test_train_end_to_end import tiny_config

    base = base8
    ref_workdir = tmp_path_factory.mktemp("ref8")
    shutil.copytree(base, ref_workdir, dirs_exist_ok=True)
    work = tmp_path_factory.mktemp(f"on{num_devices}")
    shutil.copytree(base, work, dirs_exist_ok=True)
    # same run, 4 more steps (the schedule is the 12-step one in both)
    train_and_evaluate(tiny_config(data_dir, num_train_steps=12, num_devices=8), ref_workdir)
    train_and_evaluate(tiny_config(data_dir, num_train_steps=12, num_devices=num_devices), work)
    steps_ref, loss_ref = losses(ref_workdir)
    steps, loss = losses(work)
    assert steps == steps_ref == list(range(1, 13))
    np.testing.assert_allclose(loss, loss_ref, rtol=2e-4)


def test_resume_mid_epoch_with_other_batches_is_refused(data_dir, base8, tmp_path):
    """Step 8 of 12: the epoch's last 4 batches must be built as its first 8 were."""
    from flaxtune.config import ConfigError
    from test_train_end_to_end import tiny_config

    work = tmp_path / "work"
    shutil.copytree(base8, work)
    with pytest.raises(ConfigError, match=r"step 8\) is 8 of 12 batches into an epoch[^\n]*\n"
                                          r"  data\.fill_rows: checkpoint has True, this run has False\n"
                                          r"Resume with the checkpoint's settings"):
        c = tiny_config(data_dir, num_train_steps=12)
        c.data.fill_rows = False
        train_and_evaluate(c, work)
    c = tiny_config(data_dir, num_train_steps=12)
    c.data.pack = False
    with pytest.raises(ConfigError, match=r"  data\.fill_rows: checkpoint has True, this run has None\n"
                                          r"  data\.group_by_length: checkpoint has None, this run has True\n"
                                          r"  data\.pack: checkpoint has True, this run has False"):
        train_and_evaluate(c, work)
    # the epoch finished as it began, the next one may be built otherwise
    train_and_evaluate(tiny_config(data_dir, num_train_steps=12), work)
    c = tiny_config(data_dir, num_train_steps=14)
    c.data.fill_rows = False
    train_and_evaluate(c, work)
    assert losses(work)[0] == list(range(1, 15))
