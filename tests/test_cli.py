"""The one flag convention (`fc_jax.cli`): per-command absl FlagValues, re-parsable, usage errors with status 2
naming the flag, `--help` with status 0; and every entry point (train, generate, sample, preencode, curate,
export, convert, eval, bench) on it."""

import os

import pytest
from absl import flags

from fc_jax import cli
from fc_jax.config import config_file


def _flag_values():
    fv = flags.FlagValues()
    flags.DEFINE_string("src", None, "what to read", flag_values=fv)
    flags.mark_flag_as_required("src", flag_values=fv)
    flags.DEFINE_integer("repeats", 5, "timed calls", flag_values=fv)
    flags.DEFINE_bool("skip", False, "skip the slow part", flag_values=fv)
    flags.DEFINE_list("metrics", ["a", "b"], "comma list", flag_values=fv)
    cli.DEFINE_integers("size", (32, 32), "H,W", fv, count=2)
    return fv


def _exit(capsys, fn, *args, **kwargs):
    with pytest.raises(SystemExit) as e:
        fn(*args, **kwargs)
    out, err = capsys.readouterr()
    return e.value.code, out, err


def test_parse_both_value_forms_bools_lists_and_reparse_resets():
    fv = _flag_values()
    assert cli.parse(fv, "prog", ["--src", "x", "--repeats=3", "--skip", "--metrics=c", "--size", "4,5"]) == []
    assert (fv.src, fv.repeats, fv.skip, fv.metrics, fv.size) == ("x", 3, True, ["c"], [4, 5])
    cli.parse(fv, "prog", ["--src=y", "--noskip"])
    assert (fv.src, fv.repeats, fv.skip, fv.metrics, fv.size) == ("y", 5, False, ["a", "b"], [32, 32])


@pytest.mark.parametrize("argv, names", [
    (["--src=x", "--bogus=1"], "Unknown command line flag 'bogus'"),
    (["--src=x", "--repeats=many"], "flag --repeats=many"),
    (["--src=x", "--size=1,2,3"], "flag --size=1,2,3: expected 2 comma-separated integers, got 3"),
    (["--repeats=2"], "flag --src=None: Flag --src must have a value other than None."),
    (["--src=x", "stray"], "unexpected arguments: stray"),
])
def test_usage_errors_exit_2_with_one_line_naming_the_flag(capsys, argv, names):
    code, out, err = _exit(capsys, cli.parse, _flag_values(), "python -m fc_jax.thing", argv)
    assert code == 2 and out == ""
    usage, error = err.strip().splitlines()
    assert usage.startswith("usage: python -m fc_jax.thing [flags]")
    assert error.startswith("python -m fc_jax.thing: error: ") and names in error


def test_help_lists_flags_and_exits_0(capsys):
    code, out, err = _exit(capsys, cli.parse, _flag_values(), "prog", ["--src=x", "--help"], description="Does it.")
    assert code == 0 and err == ""
    assert out.startswith("usage: prog [flags]\n\nDoes it.\n\nflags:\n")
    for line in ("  --src: what to read", "    (required)", "  --[no]skip: skip the slow part", "    (default: '5')",
                 "    (default: '32,32'; 2 comma-separated integers)"):
        assert line in out.splitlines()


def test_positional_arguments_when_named():
    fv = _flag_values()
    assert cli.parse(fv, "prog", ["--src", "x", "dit", "--repeats", "2"], positional="NETWORK") == ["dit"]
    assert fv.repeats == 2


def test_config_flag_default_at_parse_names_overrides_and_reparse(tmp_path, capsys):
    fv = flags.FlagValues()
    cli.DEFINE_config_file("config", "configs/tiny.py", "model config", fv, resolve=config_file)
    cli.parse(fv, "prog", [])
    assert fv.config.name == "tiny"
    for _ in range(2):  # the override flags of one parse do not clash with the next
        cli.parse(fv, "prog", ["--config=wan22_ti2v_5b", "--config.model.num_layers=3"])
        assert fv.config.name == "wan22_ti2v_5b" and fv.config.model.num_layers == 3
    cli.parse(fv, "prog", ["--config", "tiny"])
    assert fv.config.model.num_layers != 3
    fv.config.brand_new_field = 1  # unlocked, as fc_jax.config.load_config returns it
    code, _, err = _exit(capsys, cli.parse, fv, "prog", ["--config=nope"])
    assert code == 2 and "flag --config=nope: config 'nope'" in err
    code, _, err = _exit(capsys, cli.parse, fv, "prog", ["--config=tiny", "--config.model.bogus=1"])
    assert code == 2 and "names no field of the config: bogus" in err
    cfg = tmp_path / "mine.py"
    cfg.write_text("import ml_collections\ndef get_config(v='a'):\n    return ml_collections.ConfigDict({'v': v})\n")
    cli.parse(fv, "prog", [f"--config={cfg}:b"])
    assert fv.config.v == "b"


def test_subcommand(capsys):
    commands = {"score": "score videos", "generate": "make videos"}
    assert cli.subcommand("prog", commands, ["generate", "--x=1"]) == ("generate", ["--x=1"])
    code, out, _ = _exit(capsys, cli.subcommand, "prog", commands, ["--help"])
    assert code == 0 and "  generate  make videos" in out
    for argv, problem in (([], "a command is required"), (["plot"], "unknown command 'plot'")):
        code, out, err = _exit(capsys, cli.subcommand, "prog", commands, argv)
        assert code == 2 and out == "" and f"prog: error: {problem}; choose from score, generate" in err


def test_entry_points_parse_with_the_helper(tmp_path, capsys):
    from fc_jax.bench.__main__ import main as bench
    from fc_jax.convert.__main__ import main as convert
    from fc_jax.eval.__main__ import main as evaluate
    from fc_jax.export import main as export

    code, out, _ = _exit(capsys, bench, ["dit", "--help"])
    assert code == 0 and out.startswith("usage: python -m fc_jax.bench dit [flags]") and "  --size: latent H,W" in out
    code, _, err = _exit(capsys, bench, ["nope"])
    assert code == 2 and "unknown command 'nope'" in err
    code, _, err = _exit(capsys, export, ["--dst", str(tmp_path / "x")])
    assert code == 2 and "python -m fc_jax.export: error: flag --workdir=None" in err
    code, _, err = _exit(capsys, convert, ["dat", "--src=a", "--dst=b"])
    assert code == 2 and "argument network: invalid choice: 'dat' (choose from dit, umt5, vae)" in err
    code, out, _ = _exit(capsys, convert, ["--help"])
    assert code == 0 and "usage: python -m fc_jax.convert {dit,umt5,vae} [flags]" in out
    code, _, err = _exit(capsys, evaluate, ["score", "--bench=b", "--videos=v", "--out=o", "--judge_frames=x"])
    assert code == 2 and "python -m fc_jax.eval score: error: flag --judge_frames=x" in err
    code, out, _ = _exit(capsys, evaluate, ["generate", "--help"])
    assert code == 0 and "  --[no]random_weights: " in out and "--limit: generate only the first N" in out
    assert not os.path.exists(tmp_path / "x")


def _cli(*argv, timeout=120):
    """`python -m MODULE ARGS...` from the repository root (on the CPU), as a user types it."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", *argv], cwd=root, env=env, capture_output=True, text=True,
                          timeout=timeout)


def test_train_command_line_help_and_unknown_config():
    done = _cli("fc_jax.train", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m fc_jax.train [flags]")
    assert any(line.startswith("  --workdir: where checkpoints") for line in done.stdout.splitlines())
    done = _cli("fc_jax.train", "--config=nope", "--workdir=/tmp/x")
    assert done.returncode == 2 and done.stdout == ""
    usage, error = done.stderr.strip().splitlines()
    assert usage.startswith("usage: python -m fc_jax.train [flags]")
    assert error.startswith("python -m fc_jax.train: error: flag --config=nope: config 'nope'"), error


@pytest.mark.parametrize("module", ["fc_jax.generate", "fc_jax.sample"])
def test_generate_and_sample_take_packaged_config_names(module):
    done = _cli(module, "--config=tiny", "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"usage: python -m {module} [flags]")
    # generate's config has no flag default (with no --config it streams the tiny-world student, or tiny)
    default = "" if module == "fc_jax.generate" else "default: 'tiny'; "
    assert f"    ({default}--config.FIELD=VALUE overrides a field of it)" in done.stdout.splitlines()


def test_flat_entry_points_parse_packaged_names_with_private_flags(capsys):
    from fc_jax import generate, sample, train  # noqa: F401 (train: defines no global flags either)
    from fc_jax.data import preencode
    from fc_jax.data.curate import __main__ as curate

    cli.parse(generate.FLAGS, generate.PROG, [])
    assert generate.FLAGS.config is None  # `resolve_job` picks the tiny-world student or tiny
    cli.parse(sample.FLAGS, sample.PROG, [])
    assert sample.FLAGS.config.name == "tiny"
    for module in (generate, sample):
        cli.parse(module.FLAGS, module.PROG, ["--config=wan22_ti2v_5b", "--config.model.num_layers=2"])
        assert module.FLAGS.config.name == "wan22_ti2v_5b" and module.FLAGS.config.model.num_layers == 2
    assert "frames" not in flags.FLAGS and "workdir" not in flags.FLAGS  # nothing global
    cli.parse(curate.FLAGS, curate.PROG, ["--config=curate", "--config.work_dir=/tmp/w"])
    assert curate.FLAGS.config.work_dir == "/tmp/w"
    code, _, err = _exit(capsys, preencode.main, ["--config=tiny", "--src=a", "--dst=b"])
    assert code == 2 and "--vae, --umt5, --tokenizer required (or --random_weights" in err
