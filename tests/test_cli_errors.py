"""Input errors at the command line, and the path from a training run to a video.

A table of bad inputs to `fc_jax.generate`, `fc_jax.train` and `fc_jax.export` (subprocesses, the tiny config):
each exits with status 2 and one line `PROG: error: ...` naming the input, prints no traceback, leaves no output
behind, and is found before any weights are built (generate prints `WEIGHTS_LINE` when it starts building them;
a bad input never gets that far). Then train -> export (a generate-ready folder) -> generate, end to end.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from fc_jax.generate import WEIGHTS_LINE

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROMPT = "a person walking in a red shirt"


def _cli(*argv, timeout=240) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Images (good, 1x1, not an image) and a generate-ready tiny checkpoint (random DiT and VAE, a text cache
    holding PROMPT) built in process."""
    import jax
    from PIL import Image

    from fc_jax.config import load_config
    from fc_jax.convert.common import save_params
    from fc_jax.models import dit, vae
    from fc_jax.text import EmbeddingCache

    root = tmp_path_factory.mktemp("inputs")
    Image.new("RGB", (48, 64), (200, 40, 40)).save(root / "person.png")
    Image.new("RGB", (40, 40), (40, 200, 40)).save(root / "shirt.png")
    Image.new("RGB", (1, 1)).save(root / "tiny.png")
    (root / "junk.png").write_bytes(b"not an image")
    config = load_config("tiny")
    ckpt = root / "ckpt"
    save_params(dit.init_params(dit.build_model(config), jax.random.key(0)), str(ckpt / "dit"))
    save_params(vae.init_params(config, jax.random.key(1)), str(ckpt / "vae"))
    texts = EmbeddingCache(config.model.text_len, lambda prompts: (
        np.random.default_rng(0).standard_normal((len(prompts), config.model.text_len, config.model.text_dim)),
        np.full(len(prompts), 5)))
    texts([PROMPT])
    texts.save(str(ckpt / "text_cache.npz"))
    return {k: str(root / v) for k, v in dict(person="person.png", shirt="shirt.png", tiny="tiny.png",
                                              junk="junk.png", ckpt="ckpt", root=".").items()}


GEN = "fc_jax.generate"
IMAGES = ["--reference={person}", "--garment={shirt}"]
# (command, arguments, what the error line must say). {name} is a path from `files`; {out} the output folder.
BAD_INPUTS = {
    "frames-rule": (GEN, ["--frames=20"], "--frames=20: the number of frames must be 12k - 3 (9, 21, 33, ...: "),
    "frames-float": (GEN, ["--frames=1.2e38"], "flag --frames=1.2e38: expected a whole number"),
    "frames-huge": (GEN, ["--frames=1000000000000"], "--frames=1000000000000: the number of frames must be 12k - 3"),
    "frames-zero": (GEN, ["--frames=0"], "--frames=0: the number of frames must be 12k - 3"),
    "image-1x1": (GEN, ["--reference={tiny}"], "--reference: {tiny} is 1x1 pixels; an image must be at least 32x32"),
    "image-unreadable": (GEN, ["--reference={junk}"], "--reference: cannot read image {junk}"),
    "image-missing": (GEN, ["--garment={root}/nope.png"], "--garment: image not found: {root}/nope.png"),
    "image-folder": (GEN, ["--garment={root}"], "--garment: {root} is a folder; expected an image file"),
    "switch-syntax": (GEN, ["--switch=abc"], "--switch=abc: expected FRAME:IMAGE items"),
    "switch-missing-image": (GEN, ["--switch=9:{root}/gone.png"], "--switch=9:{root}/gone.png: image not found"),
    "switch-outside": (GEN, ["--switch=30:{shirt}"], "switch frame 30 is outside the video (frames 1..20)"),
    "switch-comma-same-chunk": (GEN, ["--frames=45", "--switch=10:{shirt},12:{person}"],
                                "two switches fall before the same chunk (starting at frame 21)"),
    "switch-comma-1x1": (GEN, ["--frames=45", "--switch=9:{shirt},15:{tiny}"],
                         "--switch=15:{tiny}: {tiny} is 1x1 pixels"),
    "output-unwritable": (GEN, ["--output=/proc/x.mp4"], "--output: cannot write /proc/x.mp4"),
    "output-folder": (GEN, ["--output={root}"], "--output: {root} is a folder; expected a file name"),
    "keep-frames": (GEN, ["--keep_frames=4"], "--keep_frames=4: keep_frames must be a multiple of 3 in [0, 18]"),
    "rebase-without-withdraw": (GEN, ["--rebase", "--no_withdraw"], "--rebase restarts RoPE positions"),
    "edit-args-alone": (GEN, ['--edit_args={{"threshold": 0.2}}'], "--edit_args are the arguments of --edit's edit"),
    "edit-with-ablation": (GEN, ["--edit=fc_jax.kv_edits:selective_switch", "--no_withdraw"],
                           "--edit replaces the built-in switch; --no_withdraw cannot go with it"),
    "edit-unimportable": (GEN, ["--edit=nope_module:x"], "--edit: edit 'nope_module:x': cannot import module"),
    "edit-no-function": (GEN, ["--edit=fc_jax.kv_edits:nope"], "module 'fc_jax.kv_edits' has no function 'nope'"),
    "edit-not-named": (GEN, ["--edit=selective_switch"], "an edit is named module:function"),
    "edit-args-json": (GEN, ["--edit=fc_jax.kv_edits:selective_switch", "--edit_args={{threshold: 1}}"],
                       "--edit_args={{threshold: 1}}: not JSON"),
    "edit-args-strings": (GEN, ["--edit=fc_jax.kv_edits:selective_switch", '--edit_args={{"threshold": "high"}}'],
                          "expected a JSON object of numbers"),
    "probe-unwritable": (GEN, ["--probe=/proc/p.json"], "--probe: cannot write /proc/p.json"),
    "checkpoint-missing": (GEN, ["--checkpoint={root}/none", *IMAGES], "--checkpoint={root}/none: no such folder"),
    "checkpoint-without-images": (GEN, ["--checkpoint={ckpt}"], "--checkpoint needs --reference and --garment"),
    "checkpoint-other-model": (GEN, ["--config=wan22_ti2v_5b", "--checkpoint={ckpt}", *IMAGES],
                               "--checkpoint={ckpt}: dit/ was made for another model than config 'wan22_ti2v_5b': "),
    "light-decoder-missing": (GEN, ["--checkpoint={ckpt}", "--decoder=light", *IMAGES],
                              "--decoder=light: --checkpoint={ckpt} has no light_decoder/ folder"),
    "decoder-unknown": (GEN, ["--decoder=taesd"], "flag --decoder=taesd: "),
    "weights-and-checkpoint": (GEN, ["--weights={root}", "--checkpoint={ckpt}", *IMAGES],
                               "--checkpoint and --weights each name a model; give one of them"),
    "weights-and-config": (GEN, ["--weights={root}", "--config=tiny"], "--weights brings its own config"),
    "weights-no-student": (GEN, ["--weights={root}"], "--weights={root}: no student.safetensors there"),
    "prompt-not-cached": (GEN, ["--checkpoint={ckpt}", "--prompt=never cached", *IMAGES],
                          "text_cache.npz does not hold the prompt 'never cached'"),
    "serve-two-models": ("fc_jax.serve", ["--weights={root}", "--checkpoint={ckpt}"],
                         "--checkpoint and --weights each name a model; give one of them"),
    "serve-edit-args-alone": ("fc_jax.serve", ['--edit_args={{"threshold": 0.2}}'],
                              "--edit_args are the arguments of --edit's edit"),
    "serve-edit-unimportable": ("fc_jax.serve", ["--edit=nope_module:x"], "--edit: edit 'nope_module:x': cannot import"),
    "serve-weights-no-student": ("fc_jax.serve", ["--weights={root}"], "--weights={root}: no student.safetensors there"),
    "train-model-config": ("fc_jax.train", ["--config=configs/tiny.py", "--workdir={out}"],
                           "--config: config 'tiny' is a model config, not a training config"),
    "export-no-run": ("fc_jax.export", ["--workdir={root}/norun", "--dst={out}"],
                      "no checkpoints folder at {root}/norun/checkpoints"),
    "export-vae-alone": ("fc_jax.export", ["--workdir={root}", "--dst={out}", "--vae={ckpt}/vae"],
                         "a generate-ready checkpoint needs --vae and a text source"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_exits_2_with_one_line_before_any_weights(files, tmp_path, case):
    command, args, expected = BAD_INPUTS[case]
    out = tmp_path / "out"  # must not be created
    fill = lambda s: s.format(**files, out=out)
    argv = [fill(a) for a in args]
    if command == GEN and not any(a.startswith("--output=") for a in argv):
        argv.append(f"--output={out}/video.mp4")
    if command == GEN and not any(a.startswith(("--config", "--weights", "--checkpoint")) for a in argv):
        argv.insert(0, "--config=tiny")  # the random-weight tiny model, whatever tiny-world weights are installed
    done = _cli(command, *argv)
    assert done.returncode == 2, (case, done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr and done.stdout == "", (case, done.stderr[-3000:])
    prog = f"python -m {command}: error: "
    errors = [line for line in done.stderr.splitlines() if line.startswith(prog)]
    assert len(errors) == 1 and fill(expected) in errors[0], (case, done.stderr)
    others = [line for line in done.stderr.splitlines() if not line.startswith(prog)]
    assert others in ([], [f"usage: python -m {command} [flags]  (--help lists the flags)"]), (case, others)
    assert WEIGHTS_LINE not in done.stderr  # found before generate started building weights
    assert not out.exists() and not os.path.exists("/proc/x.mp4.partial")


def test_debug_shows_the_traceback_of_an_input_error(files, tmp_path):
    done = _cli(GEN, "--frames=20", f"--output={tmp_path}/v.mp4", "--debug")
    assert done.returncode == 2 and "Traceback" in done.stderr and "UserError" in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("python -m fc_jax.generate: error: --frames=20: ")


def test_train_export_generate_from_the_command_line(files, tmp_path):
    """Two SFT steps of the tiny teacher; export its parameters with a VAE folder and a text cache as a generate-ready
    checkpoint; generate 21 frames from it with a switch, from the command line."""
    from fc_jax.convert.common import load_params
    from fc_jax.video import read_video

    run, ckpt, video = tmp_path / "run", tmp_path / "student", tmp_path / "video.mp4"
    done = _cli("fc_jax.train", "--config=sft_teacher:tiny", f"--workdir={run}", "--config.train.steps=2",
                "--config.checkpoint.every=2", "--config.train.eval_every=0", "--config.checkpoint.async_save=False")
    assert done.returncode == 0, done.stderr[-3000:]
    done = _cli("fc_jax.export", f"--workdir={run}", f"--dst={ckpt}", f"--vae={files['ckpt']}/vae",
                f"--text_cache={files['ckpt']}/text_cache.npz")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["step"], summary["which"], summary["parts"]) == (2, "params", ["dit", "vae", "text_cache.npz"])
    assert sorted(os.listdir(ckpt)) == ["dit", "text_cache.npz", "vae"]
    exported = load_params(str(ckpt / "dit"))
    assert not np.allclose(exported["head"]["kernel"], 0)  # trained, not the zero-initialised head

    done = _cli(GEN, "--config=tiny", f"--checkpoint={ckpt}", f"--prompt={PROMPT}", f"--reference={files['person']}",
                f"--garment={files['person']}", f"--switch=9:{files['shirt']}", "--frames=21", f"--output={video}")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{WEIGHTS_LINE}: {ckpt}" in done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert (result["random_weights"], result["frames"], result["switches"]) == (False, 21, [9])
    assert read_video(str(video)).num_frames == 21 and sorted(os.listdir(tmp_path)) == ["run", "student",
                                                                                          "video.mp4"]
