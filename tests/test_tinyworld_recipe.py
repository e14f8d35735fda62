"""The tiny world's recipe end to end at its smoke sizes (the full recipe is not run here): every step through the
real paths (the `vae` stage through the driver, rendering its data; the tokenizer and frozen umT5; pre-encoding
with the trained VAE; the `base` stage on those latents), then `ship` and `bench tinyworld` on the weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(args, env, cwd=REPO, timeout=600) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"{args} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def _jsonl(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f]


def test_recipe_smoke_ship_and_bench(tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # A relative workdir (orbax reads no checkpoint metadata through a relative path; the export must not care).
    proc = _run(["fc_jax.tinyworld", "recipe", "--workdir=tw", "--variant=smoke"], env, cwd=tmp_path)
    log = json.loads(proc.stdout.strip().splitlines()[-1])
    assert list(log) == ["data", "vae", "text", "latents", "base"]
    assert (log["vae"]["steps"], log["base"]["steps"], log["latents"]["skipped"]) == (4, 4, 0)
    assert all(v["wall_s"] > 0 for v in log.values())
    work = tmp_path / "tw"
    # The VAE stage evaluated its loss and reconstruction PSNR at steps 0, 2 and 4 (eval.jsonl), the base stage
    # its loss; both exported their EMA parameters.
    vae_evals = _jsonl(work / "vae" / "eval.jsonl")
    assert [r["step"] for r in vae_evals] == [0, 2, 4]
    assert all(0 < r["eval/psnr_db"] < 60 for r in vae_evals)
    assert [r["step"] for r in _jsonl(work / "vae" / "metrics.jsonl")] == [1, 2, 3, 4]
    assert [r["step"] for r in _jsonl(work / "base" / "eval.jsonl")] == [0, 2, 4]
    for params in ("vae_params", "base_params", "text/umt5"):
        assert (work / params / "_METADATA").exists() or any((work / params).iterdir())
    # A second run resumes: nothing is redone.
    again = json.loads(_run(["fc_jax.tinyworld", "recipe", "--workdir=tw", "--variant=smoke", "--steps=vae,base"],
                            env, cwd=tmp_path).stdout.strip().splitlines()[-1])
    assert (again["vae"]["steps"], again["base"]["steps"]) == (4, 4)
    assert [r["step"] for r in _jsonl(work / "vae" / "metrics.jsonl")] == [1, 2, 3, 4]

    weights = tmp_path / "weights"
    _run(["fc_jax.tinyworld", "ship", f"--workdir={work}", f"--dst={weights}"], env)
    names = sorted(os.listdir(weights))
    assert names == ["MODEL_CARD.md", "base.safetensors", "card.json", "curves", "tokenizer.json",
                     "umt5.safetensors", "vae.safetensors"]
    assert sorted(os.listdir(weights / "curves")) == ["base.png", "vae.png"]
    card = json.loads((weights / "card.json").read_text())
    assert card["configs"] == {"vae": "tinyworld_vae:smoke", "base": "tinyworld_base:smoke"}
    assert "Not measured yet" in (weights / "MODEL_CARD.md").read_text()

    out = json.loads(_run(["fc_jax.bench", "tinyworld", f"--weights={weights}", "--vae_samples=1",
                           "--base_samples=2", "--nostep_time"], env).stdout.strip().splitlines()[-1])
    assert out["vae_samples"] == 1 and 0 < out["vae_psnr_db"] < 60 and np.isfinite(out["vae_psnr_db_min"])
    # one video: its MSE is the pixel-weighted mean of the figure's and the background's, so its PSNR lies between
    parts = sorted([out["vae_psnr_db_figure"], out["vae_psnr_db_background"]])
    assert parts[0] - 1e-3 <= out["vae_psnr_db"] <= parts[1] + 1e-3
    assert out["base_samples"] == 2 and 0 <= out["base_motion_accuracy"] <= 1
    assert 0 <= out["base_motion_accuracy_vae_ceiling"] <= 1
    assert out["recipe_wall_s"] == {k: v["wall_s"] for k, v in card["recipe"].items()}
