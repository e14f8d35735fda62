"""The training driver and its pieces: sharded step == single-device step on 8 fake CPU devices; for every stage
(SFT, teacher forcing, GR-DMD) exact resume after SIGKILL, SIGTERM / SIGINT saves and exits, a non-finite step
stops without saving; restore onto fewer devices; a short SFT run lowers the loss; the stage registry; and the
pieces (mesh, rules, optimizer schedule, non-finite guard).

Runs that need a given number of devices, or a real process to kill, are subprocesses; they share one JAX
compilation cache so each distinct program compiles once per test session.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = "sft_teacher:tiny"
# The tiny config of every stage, as the driver runs it.
STAGE_CONFIGS = {
    "sft": ["--config=sft_teacher:tiny"],
    "teacher_forcing": ["--config=teacher_forcing:tiny"],
    "gr_dmd": ["--config=gr_dmd:tiny"],
}
# A loss that can fall fast: 4 latent channels (16 values per patch token < model width 64), a larger lr.
FAST = ["--config.model.in_channels=4", "--config.model.out_channels=4", "--config.optim.lr=0.003"]


@pytest.fixture(scope="module")
def env():
    """The subprocesses' environment: conftest's compile settings and cache, and this checkout on the path."""
    return {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _with_devices(env: dict, n: int) -> dict:
    return {**env, "XLA_FLAGS": env["XLA_FLAGS"] + f" --xla_force_host_platform_device_count={n}"}


def _train_cmd(workdir, *overrides, stage: str = "sft") -> list[str]:
    return [sys.executable, "-m", "fc_jax.train", *STAGE_CONFIGS[stage], f"--workdir={workdir}",
            "--config.train.eval_every=0", "--config.train.log_every=1000", *overrides]


def _run(cmd, env, timeout=300) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{cmd} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


def _records(workdir) -> list[dict]:
    """The complete records of metrics.jsonl, in file order."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.endswith("\n")]


def _losses(workdir) -> dict[int, float]:
    """step -> the step's metrics (other than the step) from metrics.jsonl; for SFT runs only the loss."""
    out = {}
    for record in _records(workdir):
        step = record.pop("step")
        out[step] = record["loss"] if set(record) == {"loss", "grad_norm", "learning_rate"} else record
    return out


def _checkpoint_steps(workdir) -> list[int]:
    root = os.path.join(workdir, "checkpoints")
    return sorted(int(d) for d in os.listdir(root) if d.isdigit())


# ----------------------------------------------------------------------------------------------------------------
# 1. One sharded step equals the single-device step.

SHARDED_STEP = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    from fc_jax.config import load_config
    from fc_jax.training.setup import setup

    assert jax.device_count() == 8, jax.devices()
    cfg = load_config("sft_teacher:tiny")
    cfg.video.update(dict(height=64, width=64))  # 2 x 2 tokens per latent frame, 5 frames: 20 tokens
    cfg.optim.warmup_steps = 0
    rng = np.random.default_rng(0)
    batch = {
        "video": rng.standard_normal((1, 4, 3, 4, 4, 48), np.float32),
        "reference": rng.standard_normal((1, 4, 1, 4, 4, 48), np.float32),
        "garment": rng.standard_normal((1, 4, 1, 4, 4, 48), np.float32),
        "context": rng.standard_normal((1, 4, 16, 32), np.float32),
    }
    one_device = dict(data=1, fsdp=1, tensor=1, sequence=1)
    single = setup(cfg, devices=jax.devices()[:1], mesh_sizes=one_device)
    cfg.train.seed = 3
    initial = single.stage.initial_state(single)
    # The output head starts at zero (as upstream), which would leave every other gradient zero for a step:
    # give it small random weights so the steps move all the parameters.
    params = jax.tree.map(np.asarray, initial.params)
    params["head"]["kernel"] = 0.02 * rng.standard_normal(params["head"]["kernel"].shape).astype(np.float32)
    initial = initial.replace(params=params)

    def two_steps(s):
        state = jax.device_put(jax.tree.map(np.asarray, initial), s.shardings)
        run = s.stage.compile(s)
        data = s.stage.device_batch(s, {k: v[0] for k, v in batch.items()})
        # Two steps: the second starts from the Adam moments of the first.
        state, _ = run(state, data)
        state, metrics = run(state, data)
        return state, metrics, s.shardings

    spec = lambda s: [a if a is None or isinstance(a, str) else list(a) for a in s.spec]
    single, m1, _ = two_steps(single)
    results = {}
    for name, sizes in json.loads(sys.argv[1]).items():
        sharded, m8, sh = two_steps(setup(cfg, mesh_sizes=sizes))
        ffn0 = sharded.params["blocks"]["block"]["ffn_0"]["kernel"]
        diff = jax.tree.map(lambda a, b: np.asarray(a, np.float64) - np.asarray(b, np.float64), sharded.params, single.params)
        norm = lambda t: float(np.sqrt(sum(np.sum(np.square(np.asarray(x, np.float64))) for x in jax.tree.leaves(t))))
        rel = jax.tree.map(lambda d, b: norm(d) / max(norm(b), 1e-30), diff, single.params)
        results[name] = {
            "loss": [float(m1["loss"]), float(m8["loss"])],
            "grad_norm": [float(m1["grad_norm"]), float(m8["grad_norm"])],
            "rel_param_diff": norm(diff) / norm(single.params),
            "max_leaf_rel_param_diff": max(jax.tree.leaves(rel)),
            "moved": float(np.abs(np.asarray(ffn0) - np.asarray(initial.params["blocks"]["block"]["ffn_0"]["kernel"])).max()),
            "ffn0_spec": spec(ffn0.sharding),
            "ffn0_devices": len(ffn0.sharding.device_set),
            "mu_ffn0_spec": spec(sh.opt_state[1][0].mu["blocks"]["block"]["ffn_0"]["kernel"]),
        }
    print(json.dumps(results))
    """
)

# (Sequence sharding is checked against a mesh without it in test_restore_onto_fewer_devices.)
MESHES = {"data2-fsdp2-tensor2": dict(data=2, fsdp=2, tensor=2, sequence=1)}


def test_sharded_step_equals_single_device(env, tmp_path):
    script = tmp_path / "sharded_step.py"
    script.write_text(SHARDED_STEP)
    proc = _run([sys.executable, str(script), json.dumps(MESHES)], _with_devices(env, 8))
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(results) == set(MESHES)
    for name, r in results.items():
        np.testing.assert_allclose(r["loss"][1], r["loss"][0], rtol=1e-5, err_msg=name)
        np.testing.assert_allclose(r["grad_norm"][1], r["grad_norm"][0], rtol=1e-5, err_msg=name)
        # All updated parameters together within 1e-5; each leaf within 1e-4 (a zero-initialised bias, whose
        # near-zero gradients Adam normalises to +-lr, amplifies the other reduction order the most).
        assert r["rel_param_diff"] <= 1e-5, (name, r)
        assert r["max_leaf_rel_param_diff"] <= 1e-4, (name, r)
        assert r["moved"] > 1e-3, (name, r)  # the steps did update the inner blocks
        # The state really is sharded: FFN kernels [layers, embed, mlp] FSDP over `fsdp` x `sequence`, MLP over
        # `tensor`, on all 8 devices, and the Adam moments laid out like the parameters.
        assert r["ffn0_spec"] == [None, ["fsdp", "sequence"], "tensor"], (name, r)
        assert r["mu_ffn0_spec"] == [None, ["fsdp", "sequence"], "tensor"], (name, r)
        assert r["ffn0_devices"] == 8, (name, r)


# ----------------------------------------------------------------------------------------------------------------
# 2. Exact resume after SIGKILL; restore onto a different device count.


# Steps of each stage's resume run (long enough that the kill lands mid-run) and its checkpoint interval.
RESUME_STEPS = {"sft": (200, 10), "teacher_forcing": (200, 10), "gr_dmd": (60, 10)}


@pytest.mark.parametrize("stage", sorted(STAGE_CONFIGS))
def test_sigkill_then_restart_reproduces_the_uninterrupted_run(env, tmp_path, stage):
    total, every = RESUME_STEPS[stage]
    steps = [f"--config.train.steps={total}", f"--config.checkpoint.every={every}"]
    reference = tmp_path / "reference"
    _run(_train_cmd(reference, *steps, stage=stage), env)
    want = _losses(reference)
    assert sorted(want) == list(range(1, total + 1))

    # Kill once a checkpoint is complete and the run has gone a few steps past it.
    killed = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(killed, *steps, stage=stage), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while proc.poll() is None and time.time() < deadline:
        saved = _checkpoint_steps(killed) if os.path.isdir(killed / "checkpoints") else []
        if saved and max(_losses(killed), default=0) >= saved[-1] + 3:
            break
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    reached = max(_losses(killed))
    assert reached < total, f"the run was to be killed mid-way; it finished all {total} steps"
    print(f"killed at step {reached}; checkpoints {_checkpoint_steps(killed)}")
    resume_from = max(s for s in _checkpoint_steps(killed) if s <= reached)
    assert resume_from < reached

    restart = _run(_train_cmd(killed, *steps, stage=stage), env)
    assert f"checkpoints/{resume_from}" in restart.stdout.split("resumed from")[1].splitlines()[0]
    # Each step once in the log: the steps the killed run logged after its checkpoint were dropped on resume.
    assert [r["step"] for r in _records(killed)] == list(range(1, total + 1))
    got = _losses(killed)
    # Bit for bit: every step, those recomputed after the restart included, equals the uninterrupted run.
    mismatched = {s: (got[s], want[s]) for s in got if got[s] != want[s]}
    assert not mismatched, mismatched


def test_restore_onto_fewer_devices(env, tmp_path):
    """An 8-device run (fsdp=2, tensor=2, sequence=2: tokens split too) checkpoints step 3 and goes on to step 6.
    Its step-3 checkpoint, alone in a new workdir, resumes on 4 devices (fsdp=2, tensor=2): steps 4-6 give the
    8-device losses (same state, same data position) up to the other mesh's reduction order."""
    grid = ["--config.video.height=64", "--config.video.width=64"]  # 2 x 2 tokens per frame: 20 per sample
    mesh8 = ["--config.mesh.data=1", "--config.mesh.fsdp=2", "--config.mesh.tensor=2", "--config.mesh.sequence=2",
             *grid]
    mesh4 = ["--config.mesh.data=-1", "--config.mesh.fsdp=2", "--config.mesh.tensor=2", *grid]
    reference = tmp_path / "reference"
    _run(_train_cmd(reference, "--config.train.steps=6", "--config.checkpoint.every=3", *mesh8), _with_devices(env, 8))
    want = _losses(reference)
    assert _checkpoint_steps(reference) == [3, 6]

    moved = tmp_path / "moved"
    shutil.copytree(reference / "checkpoints" / "3", moved / "checkpoints" / "3")
    shutil.copytree(reference / "synthetic_data", moved / "synthetic_data")
    proc = _run(_train_cmd(moved, "--config.train.steps=6", *mesh4), _with_devices(env, 4))
    assert "over 4 devices" in proc.stdout and "checkpoints/3" in proc.stdout
    got = _losses(moved)
    assert sorted(got) == [4, 5, 6]
    np.testing.assert_allclose([got[s] for s in (4, 5, 6)], [want[s] for s in (4, 5, 6)], rtol=1e-5)


# ----------------------------------------------------------------------------------------------------------------
# 3. SIGTERM (and Ctrl-C) saves the step reached and exits cleanly; a non-finite step stops without saving.


def _restore(stage: str, checkpoints, step: int):
    """The saved state of `step` of a tiny run of `stage`, restored on this process's one device."""
    import jax

    from fc_jax.config import load_config
    from fc_jax.training.checkpoint import Checkpointer
    from fc_jax.training.setup import setup

    config = load_config(STAGE_CONFIGS[stage][0].split("=", 1)[1])
    s = setup(config, devices=jax.devices()[:1], mesh_sizes=dict(data=1, fsdp=1, tensor=1, sequence=1))
    ckpt = Checkpointer(str(checkpoints), keep_last=2)
    try:
        assert ckpt.all_steps() == [step]
        return ckpt.restore(step, s.abstract)
    finally:
        ckpt.close()


@pytest.mark.parametrize("stage,signum", [("sft", signal.SIGTERM), ("teacher_forcing", signal.SIGTERM),
                                          ("gr_dmd", signal.SIGTERM), ("sft", signal.SIGINT)])
def test_signal_saves_a_restorable_checkpoint(env, tmp_path, stage, signum):
    import jax

    workdir = tmp_path / "run"
    cmd = _train_cmd(workdir, "--config.train.steps=100000", "--config.checkpoint.every=100000", stage=stage)
    proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while len(_losses(workdir)) < 5 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-4000:]
    reached = max(_losses(workdir))
    assert f"{signal.Signals(signum).name}: saved the checkpoint of step {reached}" in out
    assert _checkpoint_steps(workdir) == [reached]
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["preempted"] and summary["step"] == reached and summary["stage"] == stage

    # A later save cut short (a temporary folder, as orbax leaves one when killed mid-write) must not shadow it.
    partial = workdir / "checkpoints" / f"{reached + 7}.orbax-checkpoint-tmp"
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "junk").write_bytes(b"half a checkpoint")
    # Restorable: the checkpoint holds the state of that step.
    restored = _restore(stage, workdir / "checkpoints", reached)
    assert int(restored.step) == reached
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(restored))


@pytest.mark.parametrize("stage", sorted(STAGE_CONFIGS))
def test_non_finite_loss_stops_naming_step_and_batch_without_saving_it(env, tmp_path, stage):
    """Every record's dynamic + static caption embedding is NaN; dynamic captions (p = 0.7) are fine. The first
    batch holding a dynamic + static caption must stop the job, naming that step and its records (stage 3 reads
    two batches a step, the generator's and the critic's), with checkpoints (saved every step) only of the steps
    before."""
    from fc_jax.config import load_config
    from fc_jax.data import synthetic, triplets
    from fc_jax.data.pipeline import LatentGeometry

    g = LatentGeometry.from_config(load_config(STAGE_CONFIGS[stage][0].split("=", 1)[1]))

    def poisoned():
        for example in synthetic.synthetic_latents(32, g.frames, g.height, g.width, g.channels, g.text_dim, seed=0,
                                                   max_text_len=g.text_len):
            example["full_embedding"] = np.full_like(example["full_embedding"], np.nan)
            yield example

    data_dir = tmp_path / "data"
    builder = triplets.write_dataset("latents", str(data_dir), {"train": poisoned()})
    np.save(triplets.empty_prompt_path(builder), synthetic.synthetic_empty_prompt(g.text_dim))
    np.save(tmp_path / "negative.npy", synthetic.synthetic_empty_prompt(g.text_dim, seed=1))  # stage 3's negative
    workdir = tmp_path / "run"
    proc = subprocess.run(
        _train_cmd(workdir, "--config.data.synthetic=False", f"--config.data.data_dir={data_dir}",
                   f"--config.sampling.negative_embedding={tmp_path / 'negative.npy'}",
                   "--config.train.steps=50", "--config.checkpoint.every=1", "--config.checkpoint.keep_last=100",
                   "--config.checkpoint.async_save=False", stage=stage),
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 1, proc.stderr[-4000:]
    done = max(_losses(workdir), default=0)
    bad_step = done + 1
    message = [line for line in proc.stderr.splitlines() if line.startswith("training stopped:")]
    assert message and f"step {bad_step}: " in message[0] and "nan" in message[0], proc.stderr[-3000:]
    rows = 4 * (2 if stage == "gr_dmd" else 1)
    assert message[0].count("synthetic-latents-0-") == rows  # the step's records, by id
    assert _checkpoint_steps(workdir) == list(range(1, bad_step))


# ----------------------------------------------------------------------------------------------------------------
# 5. A short SFT run on synthetic triplets lowers the loss.


def test_short_sft_run_lowers_the_loss(env, tmp_path):
    """150 steps of the tiny teacher on synthetic latent triplets (video = a frame-dependent mix of the
    reference and garment latents) must bring the evaluation loss (fixed batch, fixed t and noise) below 75%
    of its value at step 0."""
    workdir = tmp_path / "sft"
    _run([sys.executable, "-m", "fc_jax.train", f"--config={TINY}", f"--workdir={workdir}",
          "--config.train.steps=150", "--config.train.eval_every=150", "--config.checkpoint.every=1000", *FAST], env)
    evals = {}
    from tensorboardX.proto import event_pb2  # read back the event file: the logs really are TensorBoard's

    events = [f for f in os.listdir(workdir / "tensorboard") if f.startswith("events.out.tfevents")]
    assert len(events) == 1
    with open(workdir / "tensorboard" / events[0], "rb") as f:
        data = f.read()
    offset = 0
    while offset < len(data):
        (length,) = np.frombuffer(data[offset : offset + 8], np.uint64)
        event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + int(length)])
        offset += 12 + int(length) + 4
        for value in event.summary.value:
            if value.tag == "eval/loss":
                evals[event.step] = value.simple_value
    assert set(evals) == {0, 150}, evals
    assert evals[150] < 0.75 * evals[0], evals


# ----------------------------------------------------------------------------------------------------------------
# The pieces, in process (one device).


def test_mesh_shape_resolution_and_errors():
    from fc_jax.training.sharding import mesh_shape

    assert mesh_shape(dict(data=-1, fsdp=2, tensor=2, sequence=1), 8) == (2, 2, 2, 1)
    assert mesh_shape(dict(data=1, fsdp=-1, tensor=1, sequence=4), 64) == (1, 16, 1, 4)
    with pytest.raises(ValueError, match="needs 16 devices, found 8"):
        mesh_shape(dict(data=2, fsdp=2, tensor=2, sequence=2), 8)
    with pytest.raises(ValueError, match="at most one -1"):
        mesh_shape(dict(data=-1, fsdp=-1), 8)
    with pytest.raises(ValueError, match="unknown axes"):
        mesh_shape(dict(model=2), 8)


def test_logical_rules_shard_repeated_names_once():
    from jax.sharding import PartitionSpec as P

    from fc_jax.training.sharding import logical_to_spec

    rules = (("batch", ("data", "fsdp")), ("tokens", "sequence"), ("embed", ("fsdp", "sequence")), ("mlp", "tensor"))
    assert logical_to_spec(("embed", "embed"), rules) == P(("fsdp", "sequence"), None)
    assert logical_to_spec(("layers", "embed", "mlp"), rules) == P(None, ("fsdp", "sequence"), "tensor")
    # Activations: the batch and the tokens take `fsdp` and `sequence`, so `embed` stays whole.
    assert logical_to_spec(("batch", "tokens", "embed"), rules) == P(("data", "fsdp"), "sequence", None)
    assert logical_to_spec(("batch", "embed"), rules) == P(("data", "fsdp"), None)


def test_authors_learning_rate_schedule():
    import ml_collections

    from fc_jax.training.optim import learning_rate_schedule

    optim = ml_collections.ConfigDict(dict(lr=1e-5, warmup_steps=100, schedule="step", decay_steps=1100,
                                           decay_factor=0.5))
    lr = learning_rate_schedule(optim)
    np.testing.assert_allclose([float(lr(s)) for s in (0, 50, 100, 1099, 1100, 4999)],
                               [0.0, 5e-6, 1e-5, 1e-5, 5e-6, 5e-6], rtol=1e-6)


def test_non_finite_step_keeps_the_state_and_reports():
    import jax
    import jax.numpy as jnp
    import ml_collections
    import optax

    from fc_jax.training.optim import make_optimizer
    from fc_jax.training.state import TrainState
    from fc_jax.training.step import make_train_step

    tx, schedule = make_optimizer(ml_collections.ConfigDict(dict(
        lr=0.1, b1=0.9, b2=0.999, eps=1e-8, weight_decay=0.0, warmup_steps=0, schedule="constant",
        decay_steps=0, decay_factor=1.0, clip_norm=1.0, grad_accum_steps=2)))
    params = {"w": jnp.ones((3,))}
    state = TrainState(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params),
                       rng=jax.random.key_data(jax.random.key(0)), ema_params=params)
    loss = lambda p, b, k: jnp.mean((p["w"] * b["x"]) ** 2)
    step = jax.jit(make_train_step(loss, tx, schedule, ema_decay=0.5, ema_start=0))

    good = {"x": jnp.ones((2, 4, 3))}  # two micro-batches
    new, metrics = step(state, good)
    assert bool(metrics["finite"]) and int(new.step) == 1
    assert float(jnp.abs(new.params["w"] - 1).max()) > 0
    # EMA: 0.5 * old + 0.5 * new params.
    np.testing.assert_allclose(new.ema_params["w"], 0.5 * 1.0 + 0.5 * new.params["w"], rtol=1e-6)
    # Accumulation: two identical micro-batches give the gradient of one.
    g_one = jax.grad(loss)(params, {"x": jnp.ones((4, 3))}, None)
    np.testing.assert_allclose(float(metrics["grad_norm"]), float(optax.global_norm(g_one)), rtol=1e-6)

    bad = {"x": jnp.full((2, 4, 3), jnp.nan)}
    kept, metrics = step(new, bad)
    assert not bool(metrics["finite"])
    assert int(kept.step) == 1
    np.testing.assert_array_equal(kept.params["w"], new.params["w"])
    np.testing.assert_array_equal(kept.opt_state[1][0].mu["w"], new.opt_state[1][0].mu["w"])
