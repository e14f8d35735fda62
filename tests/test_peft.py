"""Parameter-efficient fine-tuning (`config.train.trainable`, fc_jax.training.peft) and the channel-concat
conditioning (`config.model.condition`), on the stage-1 tiny config with one block, through the real stage: its
state layout, initial state (pretrained weights from a folder), compiled steps, checkpoints and export."""

from __future__ import annotations

import contextlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fc_jax.config import load_config
from fc_jax.convert.common import load_params, save_params, tree_path
from fc_jax.models import dit
from fc_jax.training import peft
from fc_jax.training.setup import setup

ONE_DEVICE = dict(data=1, fsdp=1, tensor=1, sequence=1)
LORA = dict(rank=4, alpha=8.0, target_modules=("q", "k", "v", "o"))
ATTENTION_KERNELS = [f"blocks/block/{a}/{m}/kernel" for a in ("self_attn", "cross_attn") for m in "qkvo"]


def _config(condition: str = "in_context", **train):
    c = load_config("sft_teacher:tiny")
    c.model.update(dict(num_layers=1, condition=condition))
    c.optim.warmup_steps = 0
    c.train.global_batch = 2
    c.train.update(train)
    return c


def _flat(tree) -> dict[str, np.ndarray]:
    return {tree_path(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _batch(s, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {k: jax.device_put(rng.standard_normal(a.shape, np.float32), a.sharding)
            for k, a in s.stage.abstract_batch(s).items()}


def _train(s, steps: int = 3):
    """(state before as numpy, state after) of `steps` compiled steps on one fixed random batch."""
    state = s.stage.initial_state(s)
    before = jax.tree.map(np.asarray, state)
    run, batch = s.stage.compile(s), _batch(s)
    for _ in range(steps):
        state, metrics = run(state, batch)
        assert metrics["finite"] and metrics["grad_norm"] > 0
    return before, state


def _adam_mu(opt_state) -> dict:
    adam = [x for x in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
            if isinstance(x, optax.ScaleByAdamState)]
    return _flat(adam[0].mu)


def _inputs(seed: int = 1):
    """(reference, garment, noisy video, t, context) of the tiny geometry (latents 4 x 2, 3 frames)."""
    k = jax.random.split(jax.random.key(seed), 4)
    cond = lambda key: jax.random.normal(key, (1, 1, 4, 2, 48))
    return (cond(k[0]), cond(k[1]), jax.random.normal(k[2], (1, 3, 4, 2, 48)), jnp.array([700.0]),
            jax.random.normal(k[3], (1, 16, 32)))


@pytest.fixture(scope="module")
def base_folder(tmp_path_factory):
    """A pretrained stand-in: the one-block tiny DiT, random, every leaf perturbed (the head is non-zero, so every
    parameter gets a gradient), saved as a parameter folder for `config.train.init_from`."""
    model = dit.build_model(_config())
    params = dit.init_params(model, jax.random.key(0))
    keys = iter(jax.random.split(jax.random.key(1), len(jax.tree.leaves(params))))
    params = jax.tree.map(lambda p: p + 0.05 * jax.random.normal(next(keys), p.shape, p.dtype), params)
    folder = str(tmp_path_factory.mktemp("base") / "params")
    save_params(params, folder)
    return folder


@pytest.fixture(scope="module")
def lora_run(base_folder, tmp_path_factory):
    """(setup, state before, state after 3 steps, workdir holding the checkpoint of step 3) of a LoRA run with EMA."""
    config = _config(trainable="lora", init_from=base_folder, ema_decay=0.5)
    config.train.lora.update(LORA)
    workdir = tmp_path_factory.mktemp("lora_run")
    s = setup(config, devices=jax.devices()[:1], mesh_sizes=ONE_DEVICE)
    before, after = _train(s)
    from fc_jax.training.checkpoint import Checkpointer

    checkpointer = Checkpointer(str(workdir / "checkpoints"), keep_last=1, async_save=False)
    checkpointer.save(3, after, None, config)
    checkpointer.close()
    return s, before, after, str(workdir)


def test_attention_mode_trains_attention_only(base_folder):
    s = setup(_config(trainable="attention", init_from=base_folder), devices=jax.devices()[:1],
              mesh_sizes=ONE_DEVICE)
    before, after = _train(s)
    old, new = _flat(before.params), _flat(after.params)
    assert set(old) == set(new)
    attention = {k for k in old if "/self_attn/" in k or "/cross_attn/" in k}
    assert {k for k in attention if k.endswith("/kernel")} == set(ATTENTION_KERNELS)
    assert {"blocks/block/self_attn/norm_q/scale", "blocks/block/cross_attn/norm_k/scale"} <= attention
    for k in old:
        if k in attention:
            continue
        np.testing.assert_array_equal(new[k], old[k], err_msg=f"frozen {k} changed")
    for k in ATTENTION_KERNELS + ["blocks/block/self_attn/norm_q/scale", "blocks/block/cross_attn/o/bias"]:
        assert np.abs(new[k] - old[k]).max() > 1e-6, f"attention leaf {k} did not train"
    # Adam moments only for the trained leaves.
    assert set(_adam_mu(after.opt_state)) == attention


def test_lora_mode_freezes_the_base_and_trains_the_factors(base_folder, lora_run):
    s, before, after, _ = lora_run
    base = _flat(load_params(base_folder))
    assert set(after.params) == {"base", "lora"}
    for k, v in _flat(before.params["base"]).items():
        np.testing.assert_array_equal(v, base[k], err_msg=f"{k} did not load from init_from")
    for name, tree in (("params", after.params), ("ema_params", after.ema_params)):
        for k, v in _flat(tree["base"]).items():
            np.testing.assert_array_equal(v, base[k], err_msg=f"frozen {name}/base/{k} changed")
    factors = sorted(k for k in _flat(after.params["lora"]))
    assert factors == sorted(k.replace("/kernel", f"/{f}") for k in ATTENTION_KERNELS for f in "ab")
    old, new, ema = _flat(before.params["lora"]), _flat(after.params["lora"]), _flat(after.ema_params["lora"])
    for k in factors:
        if k.endswith("/b"):
            assert not old[k].any(), f"{k} must start at zero"
            assert old[k].shape == (1, LORA["rank"], 64)
        else:
            bound = 1 / np.sqrt(64)
            assert old[k].shape == (1, 64, LORA["rank"]) and 0 < np.abs(old[k]).max() <= bound
        assert np.abs(new[k] - old[k]).max() > 1e-6, f"{k} did not train"
        assert np.abs(ema[k] - new[k]).max() > 0, f"EMA of {k} is not an average"
    assert set(_adam_mu(after.opt_state)) == {f"lora/{k}" for k in factors}


def test_lora_checkpoint_restores_the_whole_state(lora_run):
    from fc_jax.training.checkpoint import Checkpointer

    s, _, after, workdir = lora_run
    checkpointer = Checkpointer(f"{workdir}/checkpoints", keep_last=1, async_save=False)
    restored = checkpointer.restore(3, s.abstract)
    checkpointer.close()
    assert jax.tree.structure(restored) == jax.tree.structure(after)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(after)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@contextlib.contextmanager
def _unmerged_lora(lora: dict, scale: float):
    """Inside, every Dense of a one-block model with factors in `lora` computes the textbook LoRA x·W + b +
    scale·(x·a)·b with its base kernel untouched (an interceptor on the Dense calls; the only layer's factors)."""

    def interceptor(next_fun, args, kwargs, context):
        y = next_fun(*args, **kwargs)
        node = lora
        for name in context.module.path:
            node = node.get(name, {}) if isinstance(node, dict) else {}
        if not (isinstance(context.module, nn.Dense) and context.method_name == "__call__" and "a" in node):
            return y
        return y + scale * (args[0].astype(jnp.float32) @ node["a"][0]) @ node["b"][0]

    with nn.intercept_methods(interceptor):
        yield


def test_lora_training_loss_is_the_unmerged_models(lora_run):
    from fc_jax.training.stages.sft import sft_loss

    s, _, after, _ = lora_run
    micro, key = jax.tree.map(lambda x: x[0], _batch(s, seed=5)), jax.random.key(7)
    loss = s.stage._loss_fn(s)(after.params, micro, key)
    with _unmerged_lora(after.params["lora"], LORA["alpha"] / LORA["rank"]):
        expected = sft_loss(s.model, float(s.config.sampling.shift), after.params["base"], micro, key)
    np.testing.assert_allclose(loss, expected, rtol=1e-5)
    assert abs(float(expected) - float(sft_loss(s.model, float(s.config.sampling.shift), after.params["base"], micro,
                                                key))) > 1e-6  # the factors matter


def test_merged_lora_export_gives_the_unmerged_models_outputs(lora_run, tmp_path):
    from fc_jax.training.export import export_parameters

    s, _, after, workdir = lora_run
    summary = export_parameters(workdir, str(tmp_path / "dit"), which="params")
    exported = load_params(str(tmp_path / "dit"))
    plain = {tree_path(p): x.shape for p, x in jax.tree_util.tree_flatten_with_path(dit.abstract_params(s.model))[0]}
    assert {k: v.shape for k, v in _flat(exported).items()} == plain  # a plain DiT tree, no factors
    assert summary["parameters"] == sum(int(np.prod(shape)) for shape in plain.values())

    inputs = _inputs()
    merged = dit.conditioned_forward(s.model, exported, *inputs)
    with _unmerged_lora(after.params["lora"], LORA["alpha"] / LORA["rank"]):
        unmerged = dit.conditioned_forward(s.model, after.params["base"], *inputs)
    base = dit.conditioned_forward(s.model, after.params["base"], *inputs)
    np.testing.assert_allclose(merged, unmerged, rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(merged) - np.asarray(base)).max() > 1e-4  # the factors matter (b != 0)


def test_merge_lora_adds_the_scaled_product_per_layer():
    rng = np.random.default_rng(0)
    w, bias = rng.standard_normal((3, 5, 6), np.float32), rng.standard_normal((3, 6), np.float32)
    a, b = rng.standard_normal((3, 5, 2), np.float32), rng.standard_normal((3, 2, 6), np.float32)
    other = rng.standard_normal((5, 6), np.float32)
    params = {"base": {"blocks": {"q": {"kernel": w, "bias": bias}}, "ffn": {"kernel": other}},
              "lora": {"blocks": {"q": {"a": a, "b": b}}}}
    merged = peft.merge_lora(params, 0.5)
    for layer in range(3):
        np.testing.assert_allclose(merged["blocks"]["q"]["kernel"][layer], w[layer] + 0.5 * a[layer] @ b[layer],
                                   rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(merged["blocks"]["q"]["bias"], bias)
    np.testing.assert_array_equal(merged["ffn"]["kernel"], other)


def test_channel_concat_from_a_base_checkpoint_starts_as_the_base(base_folder):
    config = _config("channel_concat", init_from=base_folder)
    s = setup(config, devices=jax.devices()[:1], mesh_sizes=ONE_DEVICE)
    assert s.model.cfg.patch_channels == 3 * 48
    base = load_params(base_folder)
    params = s.stage.initial_state(s).params
    kernel = np.asarray(params["patch_embedding"]["kernel"])
    assert kernel.shape == (1, 2, 2, 144, 64)
    np.testing.assert_array_equal(kernel[..., :48, :], base["patch_embedding"]["kernel"])
    assert not kernel[..., 48:, :].any()

    reference, garment, video, t, context = _inputs()
    base_model = dit.build_model(_config())
    expected = base_model.apply({"params": base}, video, t, context)  # the base on the video tokens alone
    out = dit.conditioned_forward(s.model, params, reference, garment, video, t, context)
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    assert np.abs(np.asarray(expected)).max() > 1e-2


def test_channel_concat_sft_step_trains_the_condition_channels(base_folder):
    s = setup(_config("channel_concat", init_from=base_folder), devices=jax.devices()[:1], mesh_sizes=ONE_DEVICE)
    assert s.stage.tokens_per_sample(s.config) == 3 * 2  # the video's tokens only (3 frames of 2)
    _, after = _train(s, steps=1)
    kernel = np.asarray(after.params["patch_embedding"]["kernel"])
    assert np.abs(kernel[..., 48:96, :]).max() > 0 and np.abs(kernel[..., 96:, :]).max() > 0
    out = dit.conditioned_forward(s.model, after.params, *_inputs())
    other = _inputs()
    other = (other[0], -other[1]) + other[2:]  # another garment
    assert np.abs(np.asarray(out) - np.asarray(dit.conditioned_forward(s.model, after.params, *other))).max() > 0


def test_lora_on_a_channel_concat_model_also_trains_the_patch_embedding():
    config = _config("channel_concat", trainable="lora")
    config.train.lora.update(LORA)
    s = setup(config, devices=jax.devices()[:1], mesh_sizes=ONE_DEVICE)
    mask = _flat(peft.Trainable.from_config(config).mask(s.abstract.params))
    assert {k for k, m in mask.items() if m and k.startswith("base/")} == {
        "base/patch_embedding/kernel", "base/patch_embedding/bias"}


@pytest.mark.parametrize("change, message", [
    (dict(trainable="everything"), "config.train.trainable 'everything': expected one of"),
    (dict(trainable="lora", lora=dict(rank=0)), "rank must be a positive integer; got 0"),
    (dict(trainable="lora", lora=dict(target_modules=("q", "query"))), r"\['query'\] match no Dense kernel.*'q'"),
    (dict(trainable="lora", lora=dict(target_modules=())), "target_modules \\(\\): empty"),
])
def test_bad_trainable_settings_raise_naming_them(change, message):
    config = _config()
    config.train.lora.update(change.pop("lora", {}))
    config.train.update(change)
    with pytest.raises(ValueError, match=message):
        setup(config, devices=jax.devices()[:1], mesh_sizes=ONE_DEVICE)


def test_bad_condition_and_masks_raise_naming_them():
    with pytest.raises(ValueError, match="unknown model.condition 'side_by_side'"):
        dit.build_model(_config("side_by_side"))
    with pytest.raises(ValueError, match=r"no parameter lies under the modules .*top-level entries are \['ffn'\]"):
        peft.trainable_mask({"ffn": {"kernel": np.zeros((2, 2))}}, "attention")
    with pytest.raises(ValueError, match="needs the parameters as"):
        peft.trainable_mask({"ffn": {"kernel": np.zeros((2, 2))}}, "lora")
    channel_concat = dit.build_model(_config("channel_concat"))
    with pytest.raises(ValueError, match="in-context forward needs model.condition 'in_context'"):
        dit.in_context_forward(channel_concat, {}, *_inputs())
