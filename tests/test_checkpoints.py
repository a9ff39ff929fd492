"""Checkpoint policy: keep latest N + best, ignore leftover temp folders, fail loudly."""

import numpy as np
import pytest

from flaxtune.checkpoint import Checkpoints, CheckpointError


def _tree(x):
    return {"w": np.full((3,), x, np.float32)}


def test_keeps_latest_n_plus_best(tmp_path):
    ckpts = Checkpoints(tmp_path, max_to_keep=2, best_metric="accuracy", best_mode="max")
    for step, acc in zip([1, 2, 3, 4, 5], [0.9, 0.5, 0.6, 0.7, 0.4]):
        ckpts.save(step, _tree(step), _tree(0), {"step": step}, {"accuracy": acc})
        ckpts.wait()
    assert ckpts.all_steps() == [1, 4, 5]
    np.testing.assert_array_equal(ckpts.restore_params(_tree(0), 1)["w"], [1, 1, 1])
    ckpts.close()


def test_keep_best_by_min_loss_and_unranked_checkpoints(tmp_path):
    ckpts = Checkpoints(tmp_path, max_to_keep=1, best_metric="loss", best_mode="min")
    ckpts.save(1, _tree(1), _tree(0), {"step": 1}, {"loss": 0.3})
    ckpts.save(2, _tree(2), _tree(0), {"step": 2}, None)   # mid-epoch save, no eval
    ckpts.save(3, _tree(3), _tree(0), {"step": 3}, {"loss": 0.5})
    ckpts.close()
    assert Checkpoints(tmp_path, read_only=True).all_steps() == [1, 3]


def test_leftover_temporary_folders_are_ignored(tmp_path):
    ckpts = Checkpoints(tmp_path, max_to_keep=3)
    ckpts.save(4, _tree(4), _tree(0), {"step": 4})
    ckpts.close()
    leftover = tmp_path / "checkpoints" / "9.orbax-checkpoint-tmp-1700000000"
    leftover.mkdir()
    (leftover / "params").mkdir()
    reader = Checkpoints(tmp_path, read_only=True)
    assert reader.latest_step() == 4 and reader.all_steps() == [4]
    assert reader.read_meta()["step"] == 4
    # a training manager (which may clean up) also resumes from 4, not from the crashed 9
    assert Checkpoints(tmp_path, max_to_keep=3).latest_step() == 4


def test_missing_workdir_and_step_are_named(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoints in .*pass the --workdir of a train run"):
        Checkpoints(tmp_path / "nope", read_only=True)
    ckpts = Checkpoints(tmp_path, max_to_keep=3)
    ckpts.save(2, _tree(2), _tree(0), {"step": 2})
    ckpts.close()
    with pytest.raises(CheckpointError, match=r"no checkpoint for step 7 .*steps present: \[2\]"):
        Checkpoints(tmp_path, read_only=True).read_meta(7)


def test_unwritable_checkpoint_folder_fails_at_start(tmp_path):
    (tmp_path / "checkpoints").write_text("a file where the checkpoint folder must go")
    with pytest.raises(Exception, match="checkpoints"):
        Checkpoints(tmp_path, max_to_keep=3)


def test_failed_save_mid_run_raises_at_once(tmp_path):
    import shutil

    ckpts = Checkpoints(tmp_path, max_to_keep=3)
    ckpts.save(1, _tree(1), _tree(0), {"step": 1})
    ckpts.wait()
    # the disk goes away under the run: the checkpoint folder is now a file
    shutil.rmtree(tmp_path / "checkpoints")
    (tmp_path / "checkpoints").write_text("not a folder")
    with pytest.raises(NotADirectoryError, match="checkpoints/3"):
        ckpts.save(3, _tree(3), _tree(0), {"step": 3})
        ckpts.close()
