"""What the command lines share: flags generated from the run schema, `--help` that shows a
command's own flags, one clear error with exit status 2, and a quiet TensorFlow start.

This module imports neither TensorFlow nor the library's TensorFlow modules: a command
defines and parses its flags (and answers `--help`) in about a second, then imports
TensorFlow (`import_tensorflow`) to do its work.

- `define_schema_flags()`: one absl flag per setting of `adt_tf.training.config.RunConfig`
  (the setting's name, type, default and help line; choices and ranges checked when parsed),
  plus `--config` (a recipe file or the name of a shipped recipe). `config_from_flags()`
  builds the `RunConfig`: the recipe's values (or the schema's defaults), then every flag
  given on the command line.
- `define_flag(...)`: a command's own flag with the schema's value parsing (numbers read
  fractions such as 8/255; booleans true/false/1/0).
- `define_removed_flags(...)`: flags of earlier releases; giving one is an error that names
  its new spelling.
- `run(...)`: the console-script entry point: `--help` lists the command's own flags (absl's
  and TensorFlow's stay behind `--helpfull`), a bad flag value is one line and exit 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import sys
import typing
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from absl import app, flags

from adt_tf.training import config as schema

FLAGS = flags.FLAGS
#: Exit status of a bad setting, a bad input or a non-finite loss.
EXIT_USAGE = 2
#: The flag naming a recipe file.
CONFIG_FLAG = "config"
#: Whether the user chose TensorFlow's C++ log level (then its start-up lines are shown).
_USER_LOG_LEVEL = "TF_CPP_MIN_LOG_LEVEL" in os.environ


# ------------------------------------------------------------------------- parsing
class _ValueParser(flags.ArgumentParser):
    """Parses a flag's text with the schema's rules (`config.coerce`) and checks its range."""

    def __init__(self, kind: Any, field: dataclasses.Field | None, name: str):
        self.kind = kind
        self.field = field
        self.name = name

    def parse(self, argument):
        value = schema.coerce(argument, self.kind, f"--{self.name}")
        if self.field is not None:
            schema.check_field(self.field, value, self.name)
        return value

    def flag_type(self) -> str:
        base, _ = schema.optional_base(self.kind)
        return getattr(base, "__name__", "value")


class _ValueSerializer(flags.ArgumentSerializer):
    def serialize(self, value) -> str:
        if isinstance(value, (tuple, list)):
            return ",".join(str(v) for v in value)
        if isinstance(value, Mapping):
            return ",".join(f"{k}={v}" for k, v in value.items())
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)


class _StrictBooleanParser(flags.BooleanParser):
    def parse(self, argument):
        return schema.parse_bool(argument, "value") if isinstance(argument, str) else \
            super().parse(argument)


def define_flag(name: str, default: Any, help: str, kind: Any = None,
                field: dataclasses.Field | None = None, module_name: str | None = None) -> None:
    """Defines `--name` of type `kind` (bool, int, float, str, X | None, tuple[int, ...],
    dict[str, Any]; default: the default's type) with the schema's parsing; a bool flag also
    takes `--name` and `--noname`."""
    if kind is None:
        if default is None:
            raise TypeError(f"--{name}: give the kind of a flag whose default is None.")
        kind = type(default)
    base, _ = schema.optional_base(kind)
    if base is bool:
        flag = flags.BooleanFlag(name, default, help)
        flag.parser = _StrictBooleanParser()
    else:
        flag = flags.Flag(_ValueParser(kind, field, name), _ValueSerializer(), name, default,
                          help)
    flags.DEFINE_flag(flag, FLAGS, module_name=module_name or _caller())


def _caller() -> str:
    frame = sys._getframe(2)
    name = frame.f_globals.get("__name__", "__main__")
    return sys.argv[0] if name == "__main__" else name


def define_schema_flags(module_name: str | None = None) -> list[str]:
    """One flag per setting of the run schema, plus `--config`; returns their names (once:
    a second call, e.g. by adt-tune importing adt-train's module, defines nothing)."""
    names = [CONFIG_FLAG] + list(schema.flag_paths())
    if CONFIG_FLAG in FLAGS:
        return names
    module_name = module_name or _caller()
    define_flag(CONFIG_FLAG, None, "A recipe: a Python file whose get_config() returns an "
                "adt_tf.training.config.RunConfig, or the name of a shipped one ("
                + ", ".join(schema.recipe_names()) + "; adt_tf/recipes/). Flags given "
                "beside it override its values.", str | None, module_name=module_name)
    for path, field, kind in schema.schema_fields():
        default = field.default if field.default is not dataclasses.MISSING \
            else field.default_factory()
        define_flag(schema.flag_name(path, field), default, field.metadata["help"], kind,
                    field, module_name=module_name)
    return names


def config_from_flags() -> schema.RunConfig:
    """The run's `RunConfig`: `--config`'s (or the schema's defaults), with every schema flag
    given on the command line applied over it (`--method_params` and `--model_params` add
    to the recipe's arguments, an argument given again replaces it)."""
    base = schema.load_config_file(FLAGS[CONFIG_FLAG].value) if FLAGS[CONFIG_FLAG].value \
        else schema.RunConfig()
    changes = {}
    for name, path in schema.flag_paths().items():
        if FLAGS[name].present:
            value = FLAGS[name].value
            if isinstance(value, dict):
                value = {**schema.get_path(base, path), **value}
            changes[path] = value
    return schema.override(base, changes).validate()


class _RemovedParser(flags.ArgumentParser):
    def __init__(self, message: str):
        self.message = message

    def parse(self, argument):
        raise ValueError(self.message)

    def flag_type(self) -> str:
        return "removed"


def define_removed_flags(removed: Mapping[str, str], module_name: str | None = None) -> None:
    """Flags of earlier releases (name -> what replaces it): giving one, in any form, is an
    error naming its new spelling. They are not listed by `--help`."""
    for name, replacement in removed.items():
        if name in FLAGS:
            continue
        message = f"--{name} was removed; use {replacement} instead."
        flag = flags.Flag(_RemovedParser(message), None, name, None,
                          f"Removed: use {replacement}.", boolean=True)
        flags.DEFINE_flag(flag, FLAGS, module_name=module_name or "adt_tf.removed_flags")


# -------------------------------------------------------------------------- running
def import_tensorflow() -> None:
    """Imports TensorFlow with its C++ start-up lines (CUDA probing, CPU features, absl's
    log initialisation; printed twice, with an error-level `failed call to cuInit` on every
    CPU machine) silenced, unless the user set TF_CPP_MIN_LOG_LEVEL."""
    if "tensorflow" in sys.modules:
        return
    if _USER_LOG_LEVEL:
        import tensorflow  # noqa: F401
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    with _silenced_stderr():
        import tensorflow  # noqa: F401


@contextlib.contextmanager
def _silenced_stderr():
    """File descriptor 2 points at /dev/null inside (what C++ code writes directly)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def fail(command: str, error: BaseException | str, status: int = EXIT_USAGE) -> typing.NoReturn:
    """Prints "<command>: error: <message>" once to stderr and exits with `status`."""
    print(f"{command}: error: {error}", file=sys.stderr)
    sys.exit(status)


def warn(command: str, message: str | None) -> None:
    """Prints "<command>: warning: <message>" once to stderr (nothing for None)."""
    if message:
        print(f"{command}: warning: {message}", file=sys.stderr)


#: The help flags (absl's exit with status 1 after printing; here the help exits 0).
_SHORT_HELP = ("--help", "-help", "-h", "-?", "--helpshort", "-helpshort")
_FULL_HELP = ("--helpfull", "-helpfull")


def _flags_parser(command: str) -> Callable[[list[str]], list[str]]:
    def parse(argv: list[str]) -> list[str]:
        asked = [a for a in argv[1:] if a in _SHORT_HELP + _FULL_HELP]
        if asked:
            full = asked[0] in _FULL_HELP
            app.usage(shorthelp=not full, writeto_stdout=True)
            if not full:
                print("Try --helpfull to get a list of all flags (absl's and "
                      "TensorFlow's too).")
            sys.exit(0)
        try:
            return FLAGS(argv)
        except flags.Error as error:
            message = str(error)
            # absl's "flag --x=v: " prefix, dropped where the message names the flag itself.
            found = re.match(r"flag (--\w+)=.*?: (.*)", message, re.S)
            if found and found.group(2).startswith(found.group(1)):
                message = found.group(2)
            fail(command, message.replace("flag --", "--", 1))
    return parse


def run(command: str, main: Callable[[list[str]], Any], doc: str | None,
        own_flags: Iterable[str]) -> None:
    """Runs `main` as the console script `command`: `--help` prints `doc` and the flags
    `own_flags` (with defaults and help) and exits 0; a bad flag value prints one line and
    exits 2; TensorFlow's start-up lines are silenced (see `import_tensorflow`)."""
    main_module = sys.modules.get("__main__")
    if main_module is not None and doc:
        main_module.__doc__ = doc
    for name in own_flags:
        FLAGS.register_key_flag_for_module(sys.argv[0], FLAGS[name])
    app.run(main, flags_parser=_flags_parser(command))


def unexpected_arguments(argv: list[str]) -> None:
    if len(argv) > 1:
        raise ValueError(f"unexpected arguments {argv[1:]}: every setting is a --flag=VALUE "
                         "(--help lists them).")


__all__ = ["CONFIG_FLAG", "EXIT_USAGE", "config_from_flags", "define_flag",
           "define_removed_flags", "define_schema_flags", "fail", "import_tensorflow", "run",
           "unexpected_arguments", "warn"]
