"""A fresh training run keeps an earlier run's checkpoints until it has written one of its own."""
import torch

from avatar3d.training import checkpoint as ckpt_io


def _save(folder, step, run):
    return ckpt_io.save_checkpoint(folder, step, {"x": torch.full((2,), float(step))}, {"s": {}},
                                   {"run": run, "frames_train": [0, 1]})


def test_an_earlier_runs_checkpoints_survive_until_the_new_run_saves(tmp_path):
    folder = tmp_path / "checkpoints"
    _save(folder, 1000, "old")
    _save(folder, 2000, "old")
    # the new run has started but not saved yet (e.g. killed now): the old run is still resumable
    assert ckpt_io.latest_checkpoint(folder).step == 2000
    _save(folder, 500, "new")
    latest = ckpt_io.latest_checkpoint(folder)
    assert latest.step == 500 and latest.info["run"] == "new"
    assert [p.name for p in ckpt_io.list_checkpoints(folder)] == ["step_000500.json"]
    assert sorted(p.name for p in folder.iterdir()) == ["step_000500.json", "step_000500.optim.pt",
                                                        "step_000500.safetensors"]
