"""The variants of the paper's Tables 2 and 3 on the tiny world, trained through the recipe's own stages after
the recipe (`python -m fc_jax.tinyworld ablations --workdir=DIR [--tables=table2,table3]`; resumable).

- Table 2, stage 1 four ways, each from the recipe's base on the recipe's latents for `TABLE2_STEPS` steps
  (the recipe's teacher trains 1500): in-context full fine-tuning (the recipe's config), channel-concat full
  fine-tuning (`model.condition = "channel_concat"`), in-context attention-only (`train.trainable =
  "attention"`) and in-context LoRA (`train.trainable = "lora"`, exported merged).
- Table 3, stage 3 three ways, each from the recipe's teacher-forcing student and teacher for as many iterations
  as the recipe's student (`tinyworld_gr_dmd`'s `train.steps`, 500): naive DMD (`distill.reward = "none"`),
  GR-DMD at tau 0.2 (the recipe's and the paper's) and at tau 0.05 (see `TABLE3`).

Within a table every variant trains the same steps on the same data from the same start, the learning-rate
schedule scaled to its steps. Each writes `DIR/ablations/<name>` (the run) and `DIR/ablations/<name>_params`
(its exported parameters, read by `python -m fc_jax.bench tinyworld --what=table2,table3 --ablations=DIR`).
"""

from __future__ import annotations

import os
import time

from fc_jax.tinyworld import recipe

TABLE2 = {  # name -> overrides of the recipe's stage-1 config
    "in_context_full": {},
    "channel_concat_full": {"model.condition": "channel_concat"},
    "in_context_attention": {"train.trainable": "attention"},
    "in_context_lora": {"train.trainable": "lora"},
}
# tau reads against the reward's spread over a rollout's chunks. On run tw14's stage 3 the tiny world's VQ (mean 0.80)
# spreads by about 0.1 between a rollout's best and worst chunk: at the paper's 0.2 the worst chunk weighs 1.6-2.1x
# the best (`generator/weight_max_over_min`, logged every 25 iterations), at 0.05 9-52x.
TABLE3 = {  # name -> overrides of the recipe's stage-3 config
    "naive_dmd": {"distill.reward": "none"},
    "gr_dmd_tau_0.2": {"distill.temperature": 0.2},
    "gr_dmd_tau_0.05": {"distill.temperature": 0.05},
}
TABLES = {"table2": ("sft", TABLE2), "table3": ("gr_dmd", TABLE3)}
TABLE2_STEPS = 500  # Table 3's variants train as many iterations as the recipe's stage 3 (`tinyworld_gr_dmd`)
SMOKE_STEPS = 2  # the suite's variant


def folder(workdir: str) -> str:
    return os.path.join(workdir, "ablations")


def params_dir(workdir: str, name: str) -> str:
    return os.path.join(folder(workdir), f"{name}_params")


def steps_of(table: str, variant: str) -> int:
    if variant == "smoke":
        return SMOKE_STEPS
    if table == "table2":
        return TABLE2_STEPS
    from fc_jax.config import load_config

    return int(load_config(recipe.config_name("gr_dmd")).train.steps)


def variant_config(table: str, name: str, workdir: str, variant: str = ""):
    """The config of variant `name` of `table`: the recipe's stage config with the variant's overrides, trained
    `steps_of(table, variant)` steps."""
    stage, variants = TABLES[table]
    if name not in variants:
        raise ValueError(f"{table} has no variant {name!r}; expected one of {sorted(variants)}")
    config = recipe.method_config(stage, workdir, variant)
    for dotted, value in variants[name].items():
        section, key = dotted.rsplit(".", 1)
        node = config
        for part in section.split("."):
            node = node[part]
        node[key] = value
    steps = steps_of(table, variant)
    config.train.steps = steps
    if config.optim.get("decay_steps"):
        config.optim.decay_steps = steps
    config.optim.warmup_steps = min(int(config.optim.warmup_steps), steps // 10)
    config.name = f"{config.name}_{name}"
    return config


def run_ablations(workdir: str, tables=tuple(TABLES), variant: str = "", log=print) -> dict:
    """Train every variant of `tables` not trained yet (a stopped run resumes); {name: {steps, wall_s, ...}}."""
    unknown = [t for t in tables if t not in TABLES]
    if unknown:
        raise ValueError(f"unknown table(s) {unknown}; expected some of {list(TABLES)}")
    needs = {"table2": "base_params", "table3": "teacher_forcing_params"}
    out = {}
    for table in tables:
        start_from = recipe.paths(workdir)[needs[table]]
        if not os.path.isdir(start_from):
            raise FileNotFoundError(f"{start_from}: {table}'s variants start from the recipe's {needs[table]}; run "
                                    f"`python -m fc_jax.tinyworld recipe --workdir={workdir}` first")
        for name in TABLES[table][1]:
            config = variant_config(table, name, workdir, variant)
            log(f"{table} / {name}: {config.train.steps} steps ...")
            began = time.perf_counter()
            summary = recipe.train_and_export(config, os.path.join(folder(workdir), name),
                                              params_dir(workdir, name))
            out[name] = {"table": table, "steps": summary["step"], "wall_s": round(time.perf_counter() - began, 1),
                         "last_metrics": summary["last_metrics"]}
    return out
