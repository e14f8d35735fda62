"""A test-sized model with the same code paths as the 5B config (random weights; CPU friendly).

Teacher sample: python -m fc_jax.sample --config=tiny --output=out/tiny_sample.npz
"""

import ml_collections

from fc_jax.configs import wan22_ti2v_5b


def get_config() -> ml_collections.ConfigDict:
    c = wan22_ti2v_5b.get_config()
    c.name = "tiny"
    c.model.update(
        dict(
            in_channels=48,
            out_channels=48,
            dim=64,
            ffn_dim=128,
            num_heads=2,
            num_layers=2,
            text_dim=32,
            text_len=16,
            freq_dim=256,
            param_dtype="float32",
            dtype="float32",
        )
    )
    c.model.attention.update(dict(backend="xla", q_block=64, kv_block=64))
    c.vae.update(dict(encoder_dim=16, decoder_dim=16, param_dtype="float32", dtype="float32"))
    c.umt5.update(
        dict(vocab_size=512, d_model=32, num_heads=4, d_kv=8, d_ff=64, num_layers=2, text_len=16,
             param_dtype="float32", dtype="float32")
    )
    c.sampling.teacher_steps = 4
    c.video.update(dict(height=64, width=32, num_frames=9))
    return c
