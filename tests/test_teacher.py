"""The teacher sampler: UniPC driven by the in-context WanDiT, guidance that drops only the text."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fc_jax.models import dit
from fc_jax.sampling.teacher import guided_flow, sample_teacher


@pytest.fixture(scope="module")
def setup(tiny_dit):
    config, model, params = tiny_dit
    keys = jax.random.split(jax.random.key(2), 5)
    shape = (1, 1, 4, 6, 48)
    data = dict(
        reference=jax.random.normal(keys[0], shape),
        garment=jax.random.normal(keys[1], shape),
        noise=jax.random.normal(keys[2], (1, 3, 4, 6, 48)),
        context=jax.random.normal(keys[3], (1, 16, 32)),
        negative_context=jax.random.normal(keys[4], (1, 16, 32)),
    )
    return config, model, params, data


def test_guidance_drops_only_the_text(setup):
    _, model, params, d = setup
    x, t = d["noise"], 700.0
    forward = jax.jit(lambda garment, ctx: dit.in_context_forward(model, params, d["reference"], garment, x,
                                                                 jnp.array([t]), ctx))
    cond, uncond = forward(d["garment"], d["context"]), forward(d["garment"], d["negative_context"])
    g = 3.0
    ours = jax.jit(lambda: guided_flow(model, params, d["reference"], d["garment"], x, t, d["context"],
                                       d["negative_context"], g))()
    np.testing.assert_allclose(np.asarray(ours), np.asarray(uncond + g * (cond - uncond)), atol=1e-4)
    # The unconditional pass still sees the reference and garment: changing the garment changes it.
    other = forward(-d["garment"], d["negative_context"])
    assert np.abs(np.asarray(other - uncond)).max() > 1e-3


def test_sampler_equals_diffusers_unipc_driving_the_same_model(setup):
    torch = pytest.importorskip("torch")
    from diffusers import UniPCMultistepScheduler

    config, model, params, d = setup
    steps, g = 4, 3.0
    ours = sample_teacher(
        model, params, d["reference"], d["garment"], d["noise"], d["context"], d["negative_context"],
        num_steps=steps, shift=5.0, guidance_scale=g,
    )
    sched = UniPCMultistepScheduler(prediction_type="flow_prediction", use_flow_sigmas=True, flow_shift=5.0)
    sched.set_timesteps(steps)
    x = torch.from_numpy(np.array(d["noise"]))
    flow = jax.jit(lambda x, t: guided_flow(model, params, d["reference"], d["garment"], x, t,
                                            d["context"], d["negative_context"], g))
    for t in sched.timesteps:
        v = flow(jnp.asarray(x.numpy()), float(t))
        x = sched.step(torch.from_numpy(np.array(v)), t, x).prev_sample
    np.testing.assert_allclose(np.asarray(ours), x.numpy(), atol=2e-4, rtol=1e-4)
