"""Stage 1: the in-context SFT teacher (REFERENCE §5) on Wan2.2-TI2V-5B, with the authors' hyper-parameters.

5B run (pre-encoded latents, converted Wan2.2 weights; see README "Training"):
    python -m fc_jax.train --config=sft_teacher --workdir=gs://bucket/sft_teacher \
        --config.data.data_dir=gs://bucket/latents --config.train.init_from=ckpt/wan22_ti2v_5b
Smoke run on CPU (tiny model, synthetic triplets written under the workdir):
    python -m fc_jax.train --config=sft_teacher:tiny --workdir=/tmp/sft_tiny

`get_config("tiny")` is the test-sized variant: same code paths, the tiny model of configs/tiny.py, a small
latent grid, and a synthetic data set.
"""

import ml_collections

from fc_jax.configs import tiny, wan22_ti2v_5b

# Logical axis -> mesh axes (a rule applies only where its mesh axes are still free in that array).
# Parameters (and the optimizer state): FSDP, the `embed` dimension of every matrix split over `fsdp` x `sequence`
# (the sequence-parallel devices hold different weight shards too); heads and MLP over `tensor`.
# Activations: batch over `data` x `fsdp`, tokens over `sequence`, so their `embed` dimension stays whole.
LOGICAL_AXIS_RULES = (
    ("batch", ("data", "fsdp")),
    ("tokens", "sequence"),
    ("frames", None),
    ("embed", ("fsdp", "sequence")),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("kv", None),
    ("head_dim", None),
    ("layers", None),
    ("vocab", "tensor"),
    ("channels", None),
)


def get_config(variant: str = "") -> ml_collections.ConfigDict:
    if variant not in ("", "5b", "tiny"):
        raise ValueError(f"unknown variant {variant!r} of configs/sft_teacher.py; expected '' (5B) or 'tiny'")
    c = (tiny if variant == "tiny" else wan22_ti2v_5b).get_config()
    c.name = "sft_teacher" + ("_tiny" if variant == "tiny" else "")
    c.stage = "sft"

    # Master weights in fp32 (AdamW at lr 1e-5 would lose its updates in bf16), matmuls in bf16. Full remat
    # of each block: the activation memory of 20,240 tokens x 30 layers does not fit 16 GiB chips otherwise.
    c.model.param_dtype = "float32"
    c.model.remat_policy = "full"

    # Device mesh (-1: all remaining devices) and the logical-axis rules that map onto it. The 5B default is
    # FSDP with each sample's 20,240 tokens split over 4 devices: on a 64-chip v5e slice (16 GiB per chip),
    # fsdp=16 x sequence=4, a micro-batch of 16 (one sample per sequence group), 4 accumulation steps for the
    # global batch of 64 -> 7.7 GiB per chip (`python -m fc_jax.bench train`). On N chips keep
    # global_batch / grad_accum_steps a multiple of N / 4.
    c.mesh = ml_collections.ConfigDict(dict(data=1, fsdp=-1, tensor=1, sequence=4))
    c.sharding = ml_collections.ConfigDict(dict(rules=LOGICAL_AXIS_RULES))
    c.distributed = ml_collections.ConfigDict(dict(initialize="auto"))  # "auto" | "always" | "never"

    # AdamW, linear warmup, then the authors' step schedule (x0.5 from decay_step on), global-norm clip.
    c.optim = ml_collections.ConfigDict(
        dict(
            lr=1e-5,
            b1=0.9,
            b2=0.999,
            eps=1e-8,
            weight_decay=0.01,
            warmup_steps=100,
            schedule="step",  # "constant" | "step" | "cosine"
            decay_steps=1100,  # "step": the step the lr drops at; "cosine": its length after warmup
            decay_factor=0.5,  # "step": the factor; "cosine": the final fraction of lr
            clip_norm=1.0,
            grad_accum_steps=4,
        )
    )

    # Global batch 64: the authors' README ("a global batch size of 64", every stage). Their launch scripts run
    # less: scripts/train/sft_wan22_ic.sh and tf_wan22_ic.sh start 4 GPUs x batch_size 1 with no accumulation
    # (configs/*_wan22_ic.yaml: batch_size 1, grad_accum_steps 1), i.e. 4 per step; sf_wan22_ic.sh 8 x 1. fc_jax
    # keeps the README's 64 (the published runs, and the batch a 64-chip slice holds); set train.global_batch=4
    # and optim.grad_accum_steps=1 for the launch scripts' step.
    c.train = ml_collections.ConfigDict(
        dict(
            steps=5000,
            global_batch=64,
            seed=42,
            text_drop_prob=0.1,  # CFG: the text (only) replaced by the empty-prompt embedding (trainer/sft_ic.py)
            # Mixed captions (the authors' mixed_captions: true): the dynamic caption alone with this probability,
            # else dynamic + static (datasets/fashion_dataset.py: en_long[0], else en_long[0] + " " + en_long[1]).
            dynamic_caption_prob=0.7,
            ema_decay=0.0,  # 0: no EMA parameters in the state (stage 1 uses none)
            ema_start=0,
            init_from="",  # converted Wan2.2 DiT weights (fc_jax orbax folder, official or diffusers); "" = random
            # Which DiT parameters train (fc_jax.training.peft): "all" | "attention" (self- and cross-attention
            # only) | "lora" (low-rank factors on the Dense kernels of `lora.target_modules`, base frozen; exports
            # write the merged parameters).
            trainable="all",
            lora=ml_collections.ConfigDict(dict(rank=32, alpha=32.0, target_modules=("q", "k", "v", "o"))),
            log_every=10,
            eval_every=500,
            eval_batches=1,
        )
    )

    c.checkpoint = ml_collections.ConfigDict(
        dict(every=250, keep_last=3, keep_every=1000, async_save=True)
    )

    # Latent triplets written by `python -m fc_jax.data.preencode` (a TFDS ArrayRecord data set).
    c.data = ml_collections.ConfigDict(
        dict(
            data_dir="",
            split="train",
            eval_split="",  # "" = evaluate on fixed batches from the start of `split` (not held out)
            synthetic=False,  # write a synthetic data set into WORKDIR/synthetic_data first (smoke runs, tests)
            synthetic_examples=0,
            shuffle=True,
            num_threads=8,
            prefetch=16,
            on_bad_record="skip",  # "skip" (count, warn naming it) | "raise"
        )
    )

    if variant == "tiny":
        c.model.update(dict(dtype="float32", remat_policy="none"))
        c.model.attention.backend = "xla"
        c.video.update(dict(height=64, width=32, num_frames=9))  # latents [3, 4, 2]: 10 tokens with the conditions
        c.mesh.update(dict(data=-1, fsdp=1, tensor=1, sequence=1))
        c.optim.update(dict(lr=1e-3, warmup_steps=10, schedule="constant", clip_norm=1.0, grad_accum_steps=1))
        c.train.update(dict(steps=100, global_batch=4, log_every=10, eval_every=50))
        c.checkpoint.update(dict(every=25, keep_last=2, keep_every=0, async_save=True))
        c.data.update(dict(synthetic=True, synthetic_examples=64, eval_split="eval", num_threads=2, prefetch=4))
    return c
