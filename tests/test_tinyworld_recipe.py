"""The tiny world's recipe end to end at its smoke sizes (the full recipe is not run here): every step through the
real paths (the `vae` stage through the driver, rendering its data; the tokenizer and frozen umT5; pre-encoding
with the trained VAE; the `base` stage on those latents), then `ship` and `bench tinyworld` on the weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

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
    assert list(log) == ["data", "vae", "text", "latents", "base", "sft", "teacher_forcing", "gr_dmd",
                         "sampler_latents", "light_decoder"]
    assert [log[s]["steps"] for s in ("vae", "base", "light_decoder", "sft", "teacher_forcing", "gr_dmd")] == [
        4, 4, 4, 4, 4, 2]
    assert log["latents"]["skipped"] == 0
    assert all(v["wall_s"] > 0 for v in log.values())
    work = tmp_path / "tw"
    # The VAE stage evaluated its loss and reconstruction PSNR at steps 0, 2 and 4 (eval.jsonl), the base stage
    # its loss; both exported their EMA parameters.
    vae_evals = _jsonl(work / "vae" / "eval.jsonl")
    assert [r["step"] for r in vae_evals] == [0, 2, 4]
    assert all(0 < r["eval/psnr_db"] < 60 for r in vae_evals)
    assert [r["step"] for r in _jsonl(work / "vae" / "metrics.jsonl")] == [1, 2, 3, 4]
    assert [r["step"] for r in _jsonl(work / "base" / "eval.jsonl")] == [0, 2, 4]
    # The student streamed the sampler latents (3 streams of 9 frames at 64 x 64: 3 latent frames of 4 x 4), and the
    # light decoder distilled the trained VAE's decoder on clips and on them (its PSNRs against it evaluated at
    # steps 0, 2, 4, on the held-out sampler stream too).
    assert log["sampler_latents"]["streams"] == 3
    sampler = np.load(work / "sampler_latents.npy")
    assert sampler.shape == (3, 3, 4, 4, 48) and np.isfinite(sampler).all() and sampler.std() > 0.1
    light_evals = _jsonl(work / "light_decoder" / "eval.jsonl")
    assert [r["step"] for r in light_evals] == [0, 2, 4]
    assert all(0 < r["eval/psnr_vs_full_db"] < 60 and 0 < r["eval/psnr_vs_full_sampler_db"] < 60
               for r in light_evals)
    # Stage 3 optimised the critic every iteration and the generator at the first, the VQ reward in its loss.
    gr = _jsonl(work / "gr_dmd" / "metrics.jsonl")
    assert [r["step"] for r in gr] == [1, 2] and "generator/loss" in gr[0] and "critic/loss" in gr[1]
    # ... and its EMA student was scored by the tiny world's metrics on eval-split streams at steps 0 and 2.
    student_evals = _jsonl(work / "gr_dmd" / "eval.jsonl")
    assert [r["step"] for r in student_evals] == [0, 2]
    for r in student_evals:
        assert 0 <= r["eval/garment"] <= 1 and 0 <= r["eval/id"] <= 1 and 0 <= r["eval/vq"] <= 1
        assert r["eval/garment"] == pytest.approx((r["eval/garment_hgc"] + r["eval/garment_lgc"]) / 2)
    assert sorted(np.load(work / "vq_palette.npz").files) == ["points", "segments", "sigma"]
    for params in ("vae_params", "base_params", "text/umt5", "light_decoder_params", "sft_params",
                   "teacher_forcing_params", "student_params"):
        assert (work / params / "_METADATA").exists() or any((work / params).iterdir())
    # A second run resumes: nothing is redone.
    again = json.loads(_run(["fc_jax.tinyworld", "recipe", "--workdir=tw", "--variant=smoke", "--steps=vae,base"],
                            env, cwd=tmp_path).stdout.strip().splitlines()[-1])
    assert (again["vae"]["steps"], again["base"]["steps"]) == (4, 4)
    assert [r["step"] for r in _jsonl(work / "vae" / "metrics.jsonl")] == [1, 2, 3, 4]

    weights = tmp_path / "weights"
    _run(["fc_jax.tinyworld", "ship", f"--workdir={work}", f"--dst={weights}"], env)
    names = sorted(os.listdir(weights))
    parts = ["base", "light_decoder", "student", "teacher", "umt5", "vae"]
    assert names == sorted(["MODEL_CARD.md", "card.json", "curves", "tokenizer.json",
                            *(f"{p}.safetensors" for p in parts)])
    assert sorted(os.listdir(weights / "curves")) == [f"{p}.png" for p in parts if p != "umt5"]
    card = json.loads((weights / "card.json").read_text())
    assert card["configs"] == {"vae": "tinyworld_vae:smoke", "base": "tinyworld_base:smoke",
                               "light_decoder": "tinyworld_light_decoder:smoke", "teacher": "tinyworld_sft:smoke",
                               "student": "tinyworld_gr_dmd:smoke"}
    from safetensors.numpy import load_file

    assert {v.dtype for v in load_file(weights / "student.safetensors").values()} == {np.dtype(np.float16)}
    assert {v.dtype for v in load_file(weights / "vae.safetensors").values()} == {np.dtype(np.float32)}
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

    # The light decoder beside the VAE's, read from the same weights folder (small configs for the 1280x704 figures).
    smoke = ["--config=tinyworld_vae:smoke", "--light_config=tinyworld_light_decoder:smoke",
             "--small_vae_config=tinyworld_vae:smoke", "--small_light_config=tinyworld_light_decoder:smoke"]
    dec = json.loads(_run(["fc_jax.bench", "decoder", f"--weights={weights}", "--samples=1", "--repeats=1",
                           "--stream_samples=1", *smoke], env).stdout.strip().splitlines()[-1])
    assert dec["trained"] and dec["psnr_samples"] == 1 and dec["stream_samples"] == 1
    assert set(dec["stream_metrics_vae"]) == set(dec["stream_metrics_light"]) and dec["stream_metrics_max_rel_diff"] >= 0
    diffs = {k: abs(dec["stream_metrics_light"][k] - v) for k, v in dec["stream_metrics_vae"].items()}
    assert dec["stream_metrics_max_abs_diff"] == pytest.approx(max(diffs.values()), abs=2e-4)
    assert diffs[dec["stream_metrics_max_abs_diff_on"]] == pytest.approx(max(diffs.values()), abs=2e-4)
    same = {k: abs(dec["stream_metrics_light_same_latents"][k] - v) for k, v in dec["stream_metrics_vae"].items()}
    assert dec["stream_metrics_max_abs_diff_same_latents"] == pytest.approx(max(same.values()), abs=2e-4)
    assert all(0 < dec[k] < 60 for k in ("psnr_vs_full_db", "psnr_vs_real_db", "full_psnr_vs_real_db"))
    assert 0 < dec["flops_ratio_1280x704"] and dec["light_ms_per_frame"] > 0
    both = subprocess.run([sys.executable, "-m", "fc_jax.bench", "decoder", f"--weights={weights}",
                           f"--vae={work / 'vae_params'}", *smoke], cwd=REPO, env=env, capture_output=True, text=True)
    assert both.returncode != 0 and "either it or --vae" in both.stderr

    # The main job on these weights: the built-in held-out case, its switch at the middle chunk boundary, scored.
    video = tmp_path / "demo.mp4"
    summary = json.loads(_run(["fc_jax.generate", f"--weights={weights}", "--frames=21", f"--output={video}",
                               "--decoder=light"], env).stdout.strip().splitlines()[-1])
    assert (summary["weights"], summary["frames"], summary["switches"], summary["decoder"]) == (
        str(weights), 21, [9], "light")
    assert not summary["random_weights"] and video.stat().st_size > 0
    m = summary["tinyworld_metrics"]
    assert all(0 <= m[k] <= 1 for k in ("garment/hgc", "garment_after/hgc", "switch/leakage", "id/id", "vq/vq"))
    assert 0 <= m["switch/latency"] <= 21 - 9
    from fc_jax.tinyworld.demo import demo_case

    assert summary["prompt"] == demo_case(21, 9, 64, 64).caption  # the smoke geometry's built-in case

    # The paper's tables on these weights: every row and variant on the same held-out samples, the goal figures.
    report = tmp_path / "tables.md"
    out = json.loads(_run(["fc_jax.bench", "tinyworld", f"--weights={weights}", "--what=tables,kv", "--table_samples=1",
                           "--teacher_steps=2", f"--report={report}"], env).stdout.strip().splitlines()[-1])
    t1, sw = out["tables"]["table1"], out["tables"]["switching"]
    assert sorted(t1["rows"]) == ["base_i2v", "student", "student_light_decoder", "teacher", "vae_ceiling"]
    assert t1["samples"] == 1
    assert all(row["fps"] > 0 and row["sampler_fps"] > 0 and 0 <= row["garment/hgc"] <= 1
               for name, row in t1["rows"].items() if name != "vae_ceiling")
    assert "fps" not in t1["rows"]["vae_ceiling"] and 0 <= sw["one_switch"]["vae_ceiling"]["leakage"] <= 1
    assert "vae_ceiling" not in sw["three_switches"]
    for case, frames in (("one_switch", 45), ("three_switches", 93)):
        assert sw[case]["frames"] == frames
        assert all(0 <= sw[case][v]["leakage"] <= 1 for v in ("full", "no_refresh", "no_withdraw", "no_disentangle"))
    for key in ("student_over_teacher_garment", "student_over_teacher_fps", "student_over_teacher_sampler_fps",
                "student_light_decoder_over_teacher_fps", "switch_new_garment_within_chunk", "switch_leakage", "switch_continuity_ratio"):
        assert out[key] == out["tables"]["goals"][key] and np.isfinite(out[key])
    assert out["switch_leakage"] == sw["one_switch"]["full"]["leakage"]
    assert "## Table 1" in report.read_text() and "| no_withdraw |" in report.read_text()
    # ... and the KV-edit analysis: probes before and after the switch per variant, the claims, the edits' table.
    probes, edits = out["kv"]["probes"], out["kv"]["edits"]
    assert sorted(probes["variants"]) == ["full", "refresh_only", "refresh_withdraw"]
    for v in probes["variants"].values():
        assert v["switch_chunk"] == 3 and len(v["per_chunk"]) == 6
        for c in v["per_chunk"]:
            np.testing.assert_allclose(np.sum([c[g] for g in ("garment", "reference", "history", "current")], 0), 1,
                                       atol=1e-3)
    assert probes["variants"]["refresh_withdraw"]["summary"]["right_after"]["history"] == 0  # withdrawn
    assert probes["variants"]["refresh_only"]["summary"]["right_after"]["history"] > 0
    assert all(isinstance(c["holds"], bool) for c in probes["claims"].values())
    from fc_jax.bench.kv_analysis import SELECTIVE_THRESHOLDS

    assert sorted(edits["rows"]) == sorted(["paper_full", "gradual_2_chunks", "gradual_3_chunks", "reference_only_refresh",
                                            *(f"selective_switch_{t}" for t in SELECTIVE_THRESHOLDS)])
    assert all(0 <= row["leakage"] <= 1 for row in edits["rows"].values())
    rows = edits["rows"]  # the paper's switch withdraws every chunk; the reference-only refresh keeps them all
    assert rows["paper_full"]["history_kept"] == 0 and rows["reference_only_refresh"]["history_kept"] > 0
    assert "## The KV-edit analysis" in report.read_text()
    assert (tmp_path / "tables_probes_layers.png").stat().st_size > 0 and (tmp_path / "tables_probes_chunks.png").exists()

    # Tables 2 and 3: their variants trained from the recipe's models (same steps, same start), then scored.
    from fc_jax.tinyworld.ablations import SMOKE_STEPS, TABLE2, TABLE3

    trained = json.loads(_run(["fc_jax.tinyworld", "ablations", "--workdir=tw", "--variant=smoke"], env,
                              cwd=tmp_path).stdout.strip().splitlines()[-1])
    assert sorted(trained) == sorted([*TABLE2, *TABLE3]) and {v["steps"] for v in trained.values()} == {SMOKE_STEPS}
    ab_report = tmp_path / "ablations.md"
    ab = json.loads(_run(["fc_jax.bench", "tinyworld", f"--weights={weights}", "--what=table2,table3",
                          f"--ablations={work}", "--ablations_variant=smoke", "--table_samples=1", "--teacher_steps=2",
                          f"--report={ab_report}"], env).stdout.strip().splitlines()[-1])
    assert sorted(ab["table2"]["rows"]) == sorted(TABLE2) and sorted(ab["table3"]["rows"]) == sorted(TABLE3)
    assert all(0 <= r["garment/hgc"] <= 1 and r["fps"] > 0 and r["eval_loss"] > 0
               for r in ab["table2"]["rows"].values())
    for row in ab["table3"]["rows"].values():
        assert len(row["vq_per_chunk"]) == len(row["amp_per_chunk"]) == 14 and 0 <= row["late_vq"] <= 1
    assert {"in_context_over_channel_concat_garment", "in_context_below_channel_concat_eval_loss",
            "gr_dmd_over_naive_late"} <= set(ab["ablation_goals"])
    # every other tau is compared with naive DMD under its own key
    other_taus = {f"{n}_over_naive_late" for n in TABLE3 if n.startswith("gr_dmd_tau_") and n != "gr_dmd_tau_0.2"}
    assert other_taus and other_taus <= set(ab["ablation_goals"])
    assert "## Table 2" in ab_report.read_text() and (tmp_path / "ablations_table3_chunks.png").exists()

    # fc_jax.eval generate streams a tiny-world bench with the student and the light decoder of these weights.
    bench, videos = tmp_path / "twbench", tmp_path / "videos"
    _run(["fc_jax.eval", "tinyworld-bench", f"--out={bench}", "--count=2", "--height=64", "--width=64",
          "--num_frames=21"], env)
    gen = json.loads(_run(["fc_jax.eval", "generate", f"--bench={bench}", f"--out={videos}",
                           f"--tinyworld_weights={weights}", "--decoder=light", "--frames=21"],
                          env).stdout.strip().splitlines()[-1])
    assert (gen["generated"], gen["failed"], gen["decoder"], gen["config"]) == (2, 0, "light", "tinyworld_gr_dmd_smoke")
    assert len(list(videos.glob("*.mp4"))) == 2
