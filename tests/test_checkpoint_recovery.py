"""Resuming from damaged checkpoints (`fc_jax.training.checkpoint`, through the driver as `python -m fc_jax.train`
runs it): a truncated array file or an emptied `_METADATA` in the newest checkpoint is named in one line, moved
aside (kept) and the run resumes from the checkpoint before, reproducing the original steps with each step logged
once; a checkpoint written for another model is a mismatch, told apart from damage, and touches nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RUN = ["--config=sft_teacher:tiny", "--config.train.eval_every=0", "--config.checkpoint.every=2",
       "--config.checkpoint.keep_last=5", "--config.checkpoint.async_save=False"]


def _train(workdir, *overrides) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "fc_jax.train", f"--workdir={workdir}", *RUN, *overrides], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=300)


def _steps(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A 4-step run with checkpoints at steps 2 and 4."""
    workdir = tmp_path_factory.mktemp("run") / "run"
    done = _train(workdir, "--config.train.steps=4")
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]
    return workdir


def _truncate_largest_array_file(state):
    files = [os.path.join(d, f) for d, _, names in os.walk(state / "ocdbt.process_0") for f in names]
    largest = max(files, key=os.path.getsize)
    with open(largest, "r+b") as f:
        f.truncate(os.path.getsize(largest) // 2)


DAMAGE = {
    "truncated-array-file": _truncate_largest_array_file,
    "emptied-metadata": lambda state: (state / "_METADATA").write_text(""),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_an_unreadable_checkpoint_is_named_kept_and_the_previous_one_resumed(finished, tmp_path, damage):
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir)
    DAMAGE[damage](workdir / "checkpoints" / "4" / "state")
    done = _train(workdir, "--config.train.steps=6")
    assert done.returncode == 0, done.stderr[-3000:]
    reports = [line for line in done.stdout.splitlines() if " is unreadable: " in line]
    assert len(reports) == 1, done.stdout
    where = workdir / "checkpoints"
    assert reports[0].startswith("checkpoint step 4 is unreadable: ") and f"{where}/4" in reports[0]
    assert f"moved it to {where}/4.corrupt (kept, not deleted)" in reports[0]
    assert f"resumed from {where}/2\n" in done.stdout
    assert "Traceback" not in done.stderr and "Event loop is closed" not in done.stderr, done.stderr[-3000:]
    # Kept aside, never taken for a step again: the resumed run saved steps 4 and 6 anew beside it.
    assert sorted(os.listdir(where)) == ["2", "4", "4.corrupt", "6"]
    assert os.listdir(where / "4.corrupt" / "state")
    # Each step logged once, and steps 3 and 4 recomputed from step 2 exactly as the first run made them.
    records = _steps(workdir)
    assert [r["step"] for r in records] == [1, 2, 3, 4, 5, 6]
    assert records[:4] == _steps(finished)


def test_a_checkpoint_of_another_model_is_a_mismatch_not_damage(finished, tmp_path):
    workdir = tmp_path / "run"
    shutil.copytree(finished, workdir)
    done = _train(workdir, "--config.train.steps=6", "--config.model.dim=96")
    assert done.returncode == 2, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    (error,) = [line for line in done.stderr.splitlines() if line.startswith("python -m fc_jax.train: error: ")]
    assert f"checkpoint {workdir}/checkpoints/4 was written for a different state than this run's" in error
    assert "not damaged" in error and "float32[2, 64] saved, float32[2, 96] here" in error
    assert sorted(os.listdir(workdir / "checkpoints")) == ["2", "4"]  # nothing moved
    assert " is unreadable: " not in done.stdout
