"""One flag convention for every fc_jax command line: absl flags, one `flags.FlagValues` per (sub)command.

Every entry point keeps its flags in a private `flags.FlagValues()` (never the global `absl.flags.FLAGS`, and no
`app.run`) and parses them with `parse` below: the flat commands (`fc_jax.train`, `fc_jax.generate`,
`fc_jax.sample`, `fc_jax.export`, `fc_jax.data.preencode`, `fc_jax.data.curate`) as much as those with
subcommands (`python -m fc_jax.eval score|generate`, `python -m fc_jax.bench NAME`, `python -m fc_jax.convert
NETWORK`). So two subcommands may have flags of the same name, importing a module defines nothing global, and
every command line reads the same: `--config=NAME[:VARIANT]` (a packaged config such as `tiny` or
`sft_teacher:tiny`, or a file) plus `--config.a.b=value` overrides, usage errors with status 2, `--help` with
status 0. Each such module has `main(argv=None)` and a zero-argument `run()` (its console script), and ends with
`if __name__ == "__main__": run()`. This module imports nothing from the rest of fc_jax.

A subcommand's flags::

    from absl import flags
    from fc_jax import cli

    FLAGS = flags.FlagValues()
    flags.DEFINE_integer("repeats", 20, "timed steps", flag_values=FLAGS)
    flags.DEFINE_bool("skip_5b", False, "only the tiny timing", flag_values=FLAGS)   # --skip_5b / --noskip_5b
    flags.DEFINE_string("src", None, "checkpoint to read", flag_values=FLAGS)
    flags.mark_flag_as_required("src", flag_values=FLAGS)
    cli.DEFINE_integers("mesh", (1, 16, 1, 4), "DATA,FSDP,TENSOR,SEQ mesh sizes", FLAGS, count=4)  # --mesh=1,16,1,4
    cli.DEFINE_config_file("config", "configs/tiny.py", "model config", FLAGS, resolve=fc_jax.config.config_file)

    def main(argv: list[str] | None = None) -> None:   # argv: the arguments after the (sub)command's name
        cli.parse(FLAGS, "python -m fc_jax.bench train", argv, description="...")
        ... FLAGS.repeats, FLAGS.mesh, FLAGS.config ...

- `parse(flag_values, prog, argv=None, *, description="", positional=None) -> list[str]`: parses `argv`
  (default `sys.argv[1:]`) into `flag_values` and returns the positional arguments. Every call starts from the
  defaults (a command may be run several times in one process). `--name=value` and `--name value` both work for
  non-boolean flags; booleans are `--name` / `--noname`; `--flagfile=FILE` reads flags from a file; after `--`
  everything is positional. `-h` / `--help` prints `prog`'s usage, `description` and flags to stdout and exits
  with status 0. An unknown flag, a bad value, a missing required flag or (unless `positional` names them, e.g.
  `positional="NETWORK"`) a positional argument prints the usage line and a one-line
  `PROG: error: ...` naming the flag to stderr and exits with status 2 (argparse's convention). It also calls
  `quiet_known_warnings()` (jax's TPU probe note on hosts without a TPU plugin).
- `subcommand(prog, commands, argv=None, *, description="") -> (name, rest)`: for `prog NAME [flags]`:
  `commands` maps each NAME to a one-line help; returns the chosen NAME and the arguments after it. No NAME,
  an unknown one, or `--help` before it: the list of commands (stdout and status 0 for `--help`, else stderr
  and status 2).
- `DEFINE_integers(name, default, help, flag_values, count=None)`: a comma-separated list of integers
  (`--size=32,32`; `count`: exactly that many), the value a list of int. For what was argparse's `nargs=N`.
- `DEFINE_config_file(name, default, help, flag_values, resolve=None)`: an
  `ml_collections.config_flags.DEFINE_config_file` flag (`--config=configs/x.py[:arg]`, plus
  `--config.field=value` overrides) whose default is loaded at parse time (not at import). `resolve(name) ->
  path` (e.g. `fc_jax.config.config_file`, for packaged names like `--config=tiny`) maps the part before the
  `:` to a file, raising ValueError with the reason when there is none; without it the value must be a path.
  The value is an unlocked `ml_collections.ConfigDict`.
- `fail(prog, message)`: the usage error of `parse` (status 2), for checks of flag combinations after parsing.

What a command finds wrong with its inputs after parsing (a missing or unreadable file, an impossible length, a
checkpoint for another model) is a `UserError`, raised with a message saying what was expected, what was found
and what to do, and checked before anything slow starts (building weights, compiling). The command's body runs
under `user_errors(prog, debug)`, which prints a UserError as one line `PROG: error: MESSAGE` and exits with
status 2; any other exception is a bug and keeps its traceback. `DEFINE_debug(flag_values)` adds `--debug`, which
shows the traceback of a user error too:

    def main(argv=None):
        cli.parse(FLAGS, PROG, argv)
        with cli.user_errors(PROG, FLAGS.debug):
            if not os.path.isfile(FLAGS.src):
                raise cli.UserError(f"--src={FLAGS.src}: no such file; give the checkpoint to read")
            ...
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import textwrap
import traceback
from typing import Callable, Iterable, Iterator, Mapping, Sequence

from absl import flags

HELP_ARGS = ("-h", "--help", "-help", "--helpshort", "--helpfull", "-?")

# id(flag) -> (flag, default, resolve) of the flags made by DEFINE_config_file below.
_CONFIG_FLAGS: dict[int, tuple[flags.Flag, str | None, Callable[[str], str] | None]] = {}


def _usage(prog: str, positional: str | None) -> str:
    return f"usage: {prog}" + (f" {positional}" if positional else "") + " [flags]  (--help lists the flags)"


def fail(prog: str, message: str, positional: str | None = None):
    """Print `prog`'s usage line and `PROG: error: MESSAGE` (one line) to stderr; exit with status 2."""
    print(_usage(prog, positional), file=sys.stderr)
    print(f"{prog}: error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(2)


class UserError(Exception):
    """Something wrong with what the user gave (a file, a value, flags that do not go together), not a bug; the
    message says what was expected, what was found and what to do. See `user_errors`."""


@contextlib.contextmanager
def user_errors(prog: str, debug: bool = False) -> Iterator[None]:
    """Run a command's body: a `UserError` prints `PROG: error: MESSAGE` as one line on stderr (after its
    traceback when `debug`) and exits with status 2; other exceptions propagate with their tracebacks."""
    try:
        yield
    except UserError as e:
        if debug:
            traceback.print_exc()
        print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr, flush=True)
        raise SystemExit(2) from None


def DEFINE_debug(flag_values: flags.FlagValues) -> flags.FlagHolder:  # noqa: N802 (absl's naming)
    """`--debug`: show the Python traceback of a user error too (see `user_errors`)."""
    return flags.DEFINE_bool("debug", False, "show the Python traceback of an input error too (for bug reports)",
                             flag_values=flag_values)


class _DropRecords(logging.Filter):
    """Drops log records whose message starts with one of `prefixes`."""

    def __init__(self, *prefixes: str):
        super().__init__()
        self.prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefixes)


# jax's note when its PCI probe sees Google TPU hardware but no TPU plugin is installed: every command on such a
# host would print it. The training driver's first line names the platform it runs on instead.
_TPU_PROBE = _DropRecords("A Google TPU may be present on this machine")


def quiet_known_warnings() -> None:
    """Silence the known harmless warnings of the libraries below every command (idempotent): jax's TPU probe
    note. (TensorFlow Datasets' banners and progress bars are silenced where fc_jax writes a data set.)"""
    logger = logging.getLogger("jax._src.xla_bridge")
    if _TPU_PROBE not in logger.filters:
        logger.addFilter(_TPU_PROBE)


def _wants_help(argv: Sequence[str]) -> bool:
    for arg in argv:
        if arg == "--":
            return False
        if arg in HELP_ARGS:
            return True
    return False


def _flags(flag_values: flags.FlagValues) -> list[flags.Flag]:
    """The flags of `flag_values` in definition order (short names and config overrides left out)."""
    seen, out = set(), []
    for name in flag_values:
        flag = flag_values[name]
        if name != flag.name or id(flag) in seen or _is_override(flag_values, name):
            continue
        seen.add(id(flag))
        out.append(flag)
    return out


def _config_names(flag_values: flags.FlagValues) -> list[str]:
    return [name for name in flag_values if id(flag_values[name]) in _CONFIG_FLAGS]


def _is_override(flag_values: flags.FlagValues, name: str) -> bool:
    return any(name.startswith(config + ".") for config in _config_names(flag_values))


def _paragraphs(text: str, width: int = 100) -> list[str]:
    """`text` re-filled to `width`, keeping its paragraphs and its `- ` list items; a blank line first."""
    out = []
    for paragraph in text.strip().split("\n\n") if text.strip() else []:
        items, current = [], []
        for line in paragraph.splitlines():
            if line.lstrip().startswith("- ") and current:
                items.append(current)
                current = []
            current.append(line.strip())
        items.append(current)
        out.append("")
        for item in items:
            indent = "  " if item[0].startswith("- ") else ""
            out.append(textwrap.fill(" ".join(" ".join(item).split()), width, subsequent_indent=indent))
    return out


def help_text(flag_values: flags.FlagValues, prog: str, *, description: str = "",
              positional: str | None = None) -> str:
    """`prog`'s usage, `description` and one entry per flag (name, help, default)."""
    lines = [_usage(prog, positional).split("  (")[0]] + _paragraphs(description)
    entries = _flags(flag_values)
    if entries:
        lines += ["", "flags:"]
    for flag in entries:
        name = f"--[no]{flag.name}" if flag.boolean else f"--{flag.name}"
        lines.append(textwrap.fill(f"{name}: {' '.join((flag.help or '').split())}", 100, initial_indent="  ",
                                   subsequent_indent="    "))
        if id(flag) in _CONFIG_FLAGS:
            default = _CONFIG_FLAGS[id(flag)][1]
            given = f"default: {default!r}; " if default is not None else ""
            lines.append(f"    ({given}--{flag.name}.FIELD=VALUE overrides a field of it)")
        elif flag.default is not None or flag.boolean:
            kind = flag.flag_type()
            suffix = "; a comma-separated list" if "list" in kind else ""
            if isinstance(flag.parser, _IntListParser) and flag.parser.count:
                suffix = f"; {flag.parser.count} comma-separated integers"
            lines.append(f"    (default: {flag.default_as_str}{suffix})")
        if flag.name in _required(flag_values):
            lines.append("    (required)")
    return "\n".join(lines)


def _required(flag_values: flags.FlagValues) -> set[str]:
    out = set()
    for flag in _flags(flag_values):
        for validator in getattr(flag, "validators", []):
            if "must have a value other than None" in str(getattr(validator, "message", "")):
                out.add(flag.name)
    return out


def _reset(flag_values: flags.FlagValues) -> None:
    """Back to the defaults, without the `--config.field` override flags of an earlier parse."""
    for name in list(flag_values):
        if _is_override(flag_values, name):
            delattr(flag_values, name)
    flag_values.unparse_flags()


def _find(argv: Sequence[str], name: str) -> list[int]:
    """Indices of the arguments that give --name (`--name=X` or `--name X`), up to a `--`."""
    out = []
    for i, arg in enumerate(argv):
        if arg == "--":
            break
        if arg.startswith("-") and (arg.lstrip("-") == name or arg.lstrip("-").startswith(name + "=")):
            out.append(i)
    return out


def _resolve_config(value: str, resolve: Callable[[str], str] | None, name: str) -> str:
    """`NAME[:arg]` with NAME mapped to its file by `resolve` (or checked to be a file); ValueError naming the
    flag when there is none."""
    path, sep, arg = value.partition(":")
    try:
        if resolve is not None:
            path = resolve(path)
        elif not os.path.isfile(path):
            raise ValueError(f"config not found: {path}")
    except (ValueError, OSError) as e:
        raise ValueError(f"flag --{name}={value}: {e}") from None
    return path + sep + arg


def _with_configs(flag_values: flags.FlagValues, argv: list[str]) -> list[str]:
    """`argv` with each config flag's value resolved, and its default put first where it is not given."""
    argv = list(argv)
    for name in _config_names(flag_values):
        _, default, resolve = _CONFIG_FLAGS[id(flag_values[name])]
        given = _find(argv, name)
        for i in reversed(given[:-1]):  # the last one counts; config_flags would load each (and fail on overrides)
            del argv[i: i + (1 if "=" in argv[i] else 2)]
        given = _find(argv, name)
        for i in given:
            if "=" in argv[i]:
                argv[i] = f"--{name}={_resolve_config(argv[i].split('=', 1)[1], resolve, name)}"
            elif i + 1 < len(argv):
                argv[i + 1] = _resolve_config(argv[i + 1], resolve, name)
        if not given and default is not None:
            argv.insert(0, f"--{name}={_resolve_config(default, resolve, name)}")
    return argv


def parse(flag_values: flags.FlagValues, prog: str, argv: Iterable[str] | None = None, *,
          description: str = "", positional: str | None = None) -> list[str]:
    """Parse `argv` (default: `sys.argv[1:]`) into `flag_values`; return the positional arguments.
    `--help`: print the flags, exit 0. Bad flags, values, or unexpected positional arguments: usage, exit 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    quiet_known_warnings()
    _reset(flag_values)
    if _wants_help(argv):
        print(help_text(flag_values, prog, description=description, positional=positional))
        raise SystemExit(0)
    saved = sys.argv
    try:
        argv = _with_configs(flag_values, argv)
        # config_flags finds `--config.field=value` overrides in sys.argv: show it this command's arguments.
        sys.argv = [prog, *argv]
        rest = flag_values([prog, *argv])[1:]
    except (flags.Error, ValueError) as e:
        fail(prog, str(e).replace("invalid literal for int() with base 10:", "expected a whole number, got"),
             positional)
    except (KeyError, AttributeError) as e:  # ml_collections: a `--config.FIELD=VALUE` for no such field
        field = str(e.args[0] if e.args else e).strip("'\"")
        fail(prog, f"a --NAME.FIELD=VALUE override names no field of the config: {field}", positional)
    finally:
        sys.argv = saved
    if rest and positional is None:
        fail(prog, f"unexpected arguments: {' '.join(rest)}")
    return rest


def subcommand(prog: str, commands: Mapping[str, str], argv: Iterable[str] | None = None, *,
               description: str = "") -> tuple[str, list[str]]:
    """`prog NAME [flags]` -> (NAME, the arguments after it). `commands`: {NAME: one-line help}."""
    argv = list(sys.argv[1:] if argv is None else argv)
    width = max(map(len, commands)) + 2
    listing = [f"usage: {prog} {{{','.join(commands)}}} [flags]  ({prog} NAME --help lists NAME's flags)"]
    listing += _paragraphs(description)
    listing += ["", "commands:"] + [f"  {k:{width}s}{v}" for k, v in commands.items()]
    if argv and argv[0] in commands:
        return argv[0], argv[1:]
    if argv and argv[0] in HELP_ARGS:
        print("\n".join(listing))
        raise SystemExit(0)
    print("\n".join(listing), file=sys.stderr)
    problem = f"unknown command {argv[0]!r}" if argv else "a command is required"
    print(f"{prog}: error: {problem}; choose from {', '.join(commands)}", file=sys.stderr)
    raise SystemExit(2)


class _IntListParser(flags.ArgumentParser):
    """Comma-separated integers, optionally exactly `count` of them."""

    syntactic_help = "a comma-separated list of integers"

    def __init__(self, count: int | None = None):
        self.count = count

    def parse(self, argument):
        items = argument if isinstance(argument, (list, tuple)) else [s for s in str(argument).split(",") if s.strip()]
        try:
            values = [int(s) for s in items]
        except (TypeError, ValueError):
            raise ValueError(f"expected comma-separated integers, got {argument!r}") from None
        if self.count is not None and len(values) != self.count:
            raise ValueError(f"expected {self.count} comma-separated integers, got {len(values)}")
        return values

    def flag_type(self):
        return "list of int"


def DEFINE_integers(name: str, default: Sequence[int] | None, help: str, flag_values: flags.FlagValues,
                    count: int | None = None) -> flags.FlagHolder:  # noqa: N802 (absl's naming)
    """A flag holding a list of ints, given as `--name=1,2,3` (or `--name 1,2,3`); `count`: exactly that many."""
    return flags.DEFINE(_IntListParser(count), name, None if default is None else list(default), help,
                        flag_values=flag_values, serializer=flags.CsvListSerializer(","))


def DEFINE_config_file(name: str, default: str | None, help: str, flag_values: flags.FlagValues,
                       resolve: Callable[[str], str] | None = None) -> flags.FlagHolder:  # noqa: N802
    """An `ml_collections.config_flags.DEFINE_config_file` flag for a private `flag_values`: the value is the
    `get_config([arg])` of the file `--name=FILE[:arg]` (FILE = `resolve(what was given)` with `resolve`),
    unlocked, with `--name.field=value` overrides; `default` is loaded when a parse does not give one."""
    from ml_collections import config_flags

    holder = config_flags.DEFINE_config_file(name, None, help, flag_values=flag_values, lock_config=False)
    flag = flag_values[name]
    _CONFIG_FLAGS[id(flag)] = (flag, default, resolve)
    return holder
