"""`python -m fc_jax.tinyworld write|look ...`: write a tiny-world data set, or look at a few samples.

`write --data_dir=DIR [--train=N --eval=N --test=N --heldout=N] [--masks_dir=DIR]` renders a `FashionTriplets`
data set (through `fc_jax.data.triplets.write_dataset`; progress is logged) and prints its splits as JSON.
`look --out=DIR [--seeds=0,1,2]` saves per seed a PNG strip (reference, garment image, five video frames; 2x,
nearest) and prints its path and captions as JSON lines. Both take `--height`, `--width`, `--num_frames`.
`recipe --workdir=DIR [--steps=data,vae,...,gr_dmd]` renders the data, trains the VAE, writes the text encoder,
encodes the latents, trains the base model and the light decoder, then the method's three stages
(`fc_jax.tinyworld.recipe`); run it again to resume. `--carry=vae,light_decoder [--carry_from=DIR]` takes those
trained parts from a weights folder (default: the package's) instead of training them again.
`ship --workdir=DIR [--bench=FILE] [--dst=DIR]` writes its models, curves and model card as a weights folder
(default: the package's own, `fc_jax/tinyworld/weights`); FILE is `python -m fc_jax.bench tinyworld`'s JSON.
`ablations --workdir=DIR [--tables=table2,table3]` trains the variants of Tables 2 and 3 from the recipe's models
(`fc_jax.tinyworld.ablations`), resumable; `python -m fc_jax.bench tinyworld --what=table2,table3
--ablations=DIR` scores them.
"""

from __future__ import annotations

import json
import logging
import os
import sys

from absl import flags

from fc_jax.tinyworld.recipe import STEPS as RECIPE_STEPS

from fc_jax import cli

PROG = "python -m fc_jax.tinyworld"
COMMANDS = {"write": "write a tiny-world FashionTriplets data set", "look": "save PNG strips of a few samples",
            "recipe": "train the tiny world's models in order (fc_jax.tinyworld.recipe), resumable",
            "ship": "write a recipe's models as a weights folder with its model card (fc_jax.tinyworld.card)",
            "ablations": "train the variants of Tables 2 and 3 after the recipe (fc_jax.tinyworld.ablations)"}


def _geometry(fv: flags.FlagValues) -> None:
    flags.DEFINE_integer("height", 160, "frame height, pixels", flag_values=fv)
    flags.DEFINE_integer("width", 128, "frame width, pixels", flag_values=fv)
    flags.DEFINE_integer("num_frames", 45, "frames per clip (12k - 3 for streaming)", flag_values=fv)


WRITE = flags.FlagValues()
flags.DEFINE_string("data_dir", None, "where the data set is written", flag_values=WRITE)
flags.mark_flag_as_required("data_dir", flag_values=WRITE)
for _split, _n in (("train", 256), ("eval", 32), ("test", 32), ("heldout", 32)):
    flags.DEFINE_integer(_split, _n, f"examples in the {_split} split", flag_values=WRITE)
flags.DEFINE_integer("start_seed", 0, "first seed scanned for each split", flag_values=WRITE)
flags.DEFINE_string("masks_dir", None, "also save each record's part maps here (<split>/<id>.npz)", flag_values=WRITE)
_geometry(WRITE)

LOOK = flags.FlagValues()
flags.DEFINE_string("out", None, "folder for the PNG strips", flag_values=LOOK)
flags.mark_flag_as_required("out", flag_values=LOOK)
cli.DEFINE_integers("seeds", (0, 1, 2, 3), "seeds to render", LOOK)
_geometry(LOOK)


RECIPE = flags.FlagValues()
flags.DEFINE_string("workdir", None, "the recipe's folder (resumed when it exists)", flag_values=RECIPE)
flags.mark_flag_as_required("workdir", flag_values=RECIPE)
flags.DEFINE_list("steps", list(RECIPE_STEPS), "recipe steps to run, in the recipe's order",
                  flag_values=RECIPE)
flags.DEFINE_enum("variant", "", ["", "smoke"], "the configs' variant: smoke = a few steps of each, smallest sizes",
                  flag_values=RECIPE)
flags.DEFINE_list("carry", [], "trained parts (vae, base, light_decoder, teacher, student) to take from --carry_from "
                  "instead of training them", flag_values=RECIPE)
flags.DEFINE_string("carry_from", None, "a weights folder written by `ship` (default: the package's) for --carry",
                    flag_values=RECIPE)

ABLATIONS = flags.FlagValues()
flags.DEFINE_string("workdir", None, "the recipe's folder (its base, teacher-forcing student and teacher)",
                    flag_values=ABLATIONS)
flags.mark_flag_as_required("workdir", flag_values=ABLATIONS)
flags.DEFINE_list("tables", ["table2", "table3"], "which tables' variants to train", flag_values=ABLATIONS)
flags.DEFINE_enum("variant", "", ["", "smoke"], "the configs' variant (smoke: a few steps, the smoke sizes)",
                  flag_values=ABLATIONS)

SHIP = flags.FlagValues()
flags.DEFINE_string("workdir", None, "the recipe's folder", flag_values=SHIP)
flags.mark_flag_as_required("workdir", flag_values=SHIP)
flags.DEFINE_string("bench", None, "JSON of `python -m fc_jax.bench tinyworld` on these weights", flag_values=SHIP)
flags.DEFINE_string("dst", None, "weights folder to write (default: the package's)", flag_values=SHIP)


def main(argv: list[str] | None = None) -> None:
    """`argv`: the arguments after the program name (default: sys.argv[1:]), the command first."""
    command, rest = cli.subcommand(PROG, COMMANDS, argv, description=__doc__.splitlines()[0])
    if command == "write":
        cli.parse(WRITE, f"{PROG} write", rest, description=COMMANDS["write"])
        _write(WRITE)
    elif command == "look":
        cli.parse(LOOK, f"{PROG} look", rest, description=COMMANDS["look"])
        _look(LOOK)
    elif command == "recipe":
        cli.parse(RECIPE, f"{PROG} recipe", rest, description=COMMANDS["recipe"])
        from fc_jax.tinyworld.recipe import STEPS, run_recipe

        unknown = [s for s in RECIPE.steps if s not in STEPS]
        if unknown:
            cli.fail(f"{PROG} recipe", f"--steps: unknown step(s) {unknown}; expected some of {list(STEPS)}")
        if RECIPE.carry:
            from fc_jax.tinyworld.card import carry_over
            from fc_jax.tinyworld.weights import SHIPPED

            with cli.user_errors(f"{PROG} recipe"):
                try:
                    carry_over(RECIPE.workdir, RECIPE.carry_from or SHIPPED, RECIPE.carry)
                except (FileNotFoundError, ValueError) as e:
                    raise cli.UserError(f"--carry: {e}") from None
        print(json.dumps(run_recipe(RECIPE.workdir, RECIPE.steps, RECIPE.variant)))
    elif command == "ablations":
        cli.parse(ABLATIONS, f"{PROG} ablations", rest, description=COMMANDS["ablations"])
        from fc_jax.tinyworld.ablations import TABLES, run_ablations

        unknown = [t for t in ABLATIONS.tables if t not in TABLES]
        if unknown:
            cli.fail(f"{PROG} ablations", f"--tables: unknown {unknown}; expected some of {list(TABLES)}")
        with cli.user_errors(f"{PROG} ablations"):
            try:
                done = run_ablations(ABLATIONS.workdir, ABLATIONS.tables, ABLATIONS.variant,
                                     log=lambda m: print(m, file=sys.stderr, flush=True))
            except FileNotFoundError as e:
                raise cli.UserError(str(e)) from None
        print(json.dumps(done))
    else:
        cli.parse(SHIP, f"{PROG} ship", rest, description=COMMANDS["ship"])
        from fc_jax.tinyworld.card import write_weights
        from fc_jax.tinyworld.weights import SHIPPED, folder_size

        bench = json.load(open(SHIP.bench)) if SHIP.bench else None
        dst = SHIP.dst or SHIPPED
        write_weights(SHIP.workdir, dst, bench)
        print(json.dumps({"dst": dst, "bytes": folder_size(dst)}))


def _write(a) -> None:
    from fc_jax.tinyworld.dataset import write_tinyworld

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    counts = {s: getattr(a, s) for s in ("train", "eval", "test", "heldout")}
    builder = write_tinyworld(a.data_dir, counts, height=a.height, width=a.width, num_frames=a.num_frames,
                              start_seed=a.start_seed, masks_dir=a.masks_dir)
    print(json.dumps({"data_dir": builder.data_dir,
                      "splits": {k: v.num_examples for k, v in builder.info.splits.items()}}))


def _look(a) -> None:
    import numpy as np
    from PIL import Image

    from fc_jax.tinyworld.render import render_sample
    from fc_jax.tinyworld.spec import sample_spec

    os.makedirs(a.out, exist_ok=True)
    for seed in a.seeds:
        sample = render_sample(sample_spec(seed, a.height, a.width, a.num_frames))
        F = len(sample.video)
        picks = [sample.reference, sample.garment] + [sample.video[i] for i in np.linspace(0, F - 1, 5).astype(int)]
        strip = np.concatenate([np.pad(f, ((2, 2), (2, 2), (0, 0))) for f in picks], 1)
        path = os.path.join(a.out, f"seed{seed}.png")
        Image.fromarray(strip).resize((strip.shape[1] * 2, strip.shape[0] * 2), Image.NEAREST).save(path)
        print(json.dumps({"png": path, "static_caption": sample.static_caption,
                          "dynamic_caption": sample.dynamic_caption}))


def run() -> None:
    """Console-script entry point."""
    main()


if __name__ == "__main__":
    run()
