"""The description of a training run: one typed, nested schema (`RunConfig`).

Why one module of about 650 lines: the schema is one tree (its sections, their fields with
help and ranges, the typed values the flags parse, the override of a path); split across
files, a reader would have to assemble the one description of a run again.

Everything a run needs is a field of one of the sections below, each with its type, default,
one line of help and (where it has one) its allowed values or range. The command lines'
flags are generated from these fields (`trainers.cli.define_schema_flags`), a recipe is a
Python file whose `get_config()` returns a `RunConfig` (`adt_tf/recipes/`), the benchmarks
and the tuner build theirs from it, and `adt_tf.training.record` resolves it once against the
dataset and the registries into the record written to `<workdir>/config.json`.

This module imports neither TensorFlow nor Keras: a command can parse and check its flags
(and print `--help`) before TensorFlow starts.

Example:
    >>> config = RunConfig()
    >>> config.method.name, config.optim.epochs
    ('adt_exp', 76)
    >>> config = override(config, {"optim.epochs": 5, "method.params": {"inner_steps": 3}})
    >>> config.optim.epochs, config.method.params
    (5, {'inner_steps': 3})
    >>> RunConfig.from_flags(epochs=5, method="pgd_at").method.name  # the flags' names
    'pgd_at'
    >>> parse_value("8/255", float_or_none(), "--epsilon")
    0.03137254901960784
    >>> parse_bool("False", "random_epsilon")
    False
"""

from __future__ import annotations

import dataclasses
import difflib
import importlib.util
import math
import os
import re
import typing
from collections.abc import Iterator, Mapping
from typing import Any

from adt_tf.core import checks
from adt_tf.core.checks import parse_bool, parse_number

#: The version of the record's layout (`config.json`): 2 is this nested schema; records
#: without one are the flat layout of version 1 (read through `migrate_flat_record`).
SCHEMA_VERSION = 2
#: The version of the algorithms a run was trained with, recorded beside the config so that
#: a run never resumes under changed algorithms: 2 since the baselines follow their authors'
#: code (AT_PGD and ALP on the last PGD iterate, TRADES's three forwards, Fast AT's
#: training-mode FGSM, the reference initialisations); records without it are 1. Settings
#: whose algorithm changed since have their own, higher versions
#: (`CHANGED_ALGORITHMS`): a run of other settings keeps resuming.
ALGORITHM_VERSION = 2
#: Version 3: ALP's outer loss is one training-mode forward on the clean and
#: adversarial batches joined (the released code's), and the cyclic schedule cycles the
#: momentum as PyTorch's CyclicLR does (Fast AT's published recipe).
CHANGED_ALGORITHMS = {("method.name", "alp"): 3, ("optim.lr_schedule", "cyclic"): 3}


def algorithm_version(config: RunConfig) -> int:
    """The version of the algorithms a config's run uses (see `CHANGED_ALGORITHMS`)."""
    versions = [v for (path, value), v in CHANGED_ALGORITHMS.items()
                if get_path(config, path) == value]
    return max([ALGORITHM_VERSION, *versions])

NORMS = ("linf", "l2")
STRATEGIES = ("default", "mirrored", "multiworker", "tpu")
LR_SCHEDULES = ("step", "cyclic")
WEIGHT_DECAY_FORMS = ("coupled", "decoupled")
#: The value of --method_params / --model_params that lists the arguments instead.
HELP = "help"


def setting(default: Any, help: str, *, flag: str | None = None,
            choices: tuple[str, ...] | None = None, minimum: float | None = None,
            maximum: float | None = None, above: float | None = None,
            below: float | None = None) -> Any:
    """A schema field: its default, its help line, its flag name (default: the field's
    name) and its allowed values (`choices`, or a range: `minimum`/`maximum` inclusive,
    `above`/`below` exclusive)."""
    metadata = {"help": help, "flag": flag, "choices": choices, "minimum": minimum,
                "maximum": maximum, "above": above, "below": below}
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default),
                                 metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the images come from and how many are used."""

    dataset: str = setting("cifar10_sample", "Dataset: cifar10, cifar100, svhn_cropped, "
                           "mnist, fashion_mnist (tensorflow-datasets), cifar10_sample (2,000 "
                           "training and 500 test images shipped with the package) or "
                           "npz:DIR (a folder with train.npz and test.npz).")
    data_dir: str | None = setting(None, "Where tensorflow-datasets keeps its files "
                                   "(a location: not a setting of the run).")
    max_train_examples: int | None = setting(None, "Use only the first N training images "
                                             "(default: all).", minimum=1)
    normalize: bool = setting(False, "Normalise inputs by the training set's channel mean/"
                              "std inside the classifier (off: the ADT reference feeds pixels "
                              "in [0, 1] as they are).")


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The classifier: a registered architecture and its own arguments."""

    name: str = setting("small_cnn", "Classifier: small_cnn, wide_resnet, wrn_28_10, "
                        "wrn_34_10, wrn_16_4, wrn_10_1, preact_resnet18.", flag="model")
    params: dict[str, Any] = setting({}, "The classifier's own arguments, NAME=VALUE,... "
                                     "(e.g. width=16,batch_norm=true,dropout=0); typed from "
                                     "its builder's signature; --model_params=help lists "
                                     "them.", flag="model_params")


@dataclasses.dataclass(frozen=True)
class MethodConfig:
    """The training method: a registered method and its own arguments."""

    name: str = setting("adt_exp", "Training method: standard, adt_exp, adt_exp_am, "
                        "adt_imp_am, pgd_at, fgsm_at, fast_at, alp, trades, feascatter, "
                        "awp_at, awp_trades, awp_adt_exp.",
                        flag="method")
    params: dict[str, Any] = setting({}, "The method's own arguments, NAME=VALUE,... (e.g. "
                                     "entropy_weight=0.05,inner_steps=10); typed from its "
                                     "constructor; --method_params=help lists them.",
                                     flag="method_params")


@dataclasses.dataclass(frozen=True)
class ThreatConfig:
    """The threat model of training (and of the run's validation and report)."""

    norm: str = setting("linf", "Threat model: linf (the paper's) or l2 (every method; "
                        "ADT's distributions are mapped radially onto the L2 ball).",
                        choices=NORMS)
    epsilon: float | None = setting(None, "Budget in the [0, 1] pixel scale; a fraction "
                                    "such as 8/255 is read (default: the dataset's for "
                                    "--norm: 8/255 L-inf, 0.5 L2 for CIFAR).", above=0.0)


@dataclasses.dataclass(frozen=True)
class OptimConfig:
    """The outer optimiser and its schedule."""

    epochs: int = setting(76, "Training epochs (the reference schedule: 76).", minimum=1)
    batch_size: int = setting(64, "Global batch size.", minimum=1)
    lr: float = setting(0.1, "SGD learning rate.", above=0.0)
    lr_schedule: str = setting("step", "step: --lr, x --lr_decay_factor from each of "
                               "--lr_decay_epochs; cyclic: Fast AT's triangle 0 -> --lr -> 0 "
                               "over the run, one value per step.", choices=LR_SCHEDULES)
    lr_decay_epochs: tuple[int, ...] = setting((75, 90, 100), "Epochs (counted from 1) from "
                                               "which the rate is multiplied by "
                                               "--lr_decay_factor once more (the "
                                               "reference's 75: 74 epochs at --lr, 2 at "
                                               "x0.1 in 76).", minimum=1)
    lr_decay_factor: float = setting(0.1, "Learning-rate decay factor.", minimum=0.0,
                                     maximum=1.0)
    momentum: float = setting(0.9, "SGD momentum.", minimum=0.0, maximum=1.0)
    weight_decay: float = setting(2e-4, "SGD weight decay (see --weight_decay_form).",
                                  minimum=0.0)
    weight_decay_form: str = setting("coupled", "coupled: PyTorch's L2 term wd * w added to "
                                     "the gradient before momentum (the reference); "
                                     "decoupled: Keras's w -= lr * wd * w, about 10x weaker "
                                     "at momentum 0.9.", choices=WEIGHT_DECAY_FORMS)


@dataclasses.dataclass(frozen=True)
class ValidationConfig:
    """The held-out validation split, the best checkpoint and weight averaging."""

    examples: int = setting(0, "Hold out this many training images (a seeded, class-"
                            "stratified draw, recorded; never trained on), score them each "
                            "--validation_every epochs and keep <workdir>/best.keras, the "
                            "epoch of the highest val_robust_accuracy. 0: no split.",
                            flag="validation_examples", minimum=0)
    every: int = setting(1, "Score the validation split every this many epochs (and after "
                         "the last).", flag="validation_every", minimum=1)
    attack: str = setting("pgd10", "The validation's attack: pgd<steps>, the evaluation's PGD "
                          "(steps of epsilon/4 from a uniform random start; PGD-L2 under "
                          "--norm=l2).", flag="validation_attack")
    seed: int | None = setting(None, "Seed of the validation draw (default: --seed).",
                               flag="validation_seed", minimum=0)
    ema_decay: float | None = setting(None, "Keep an exponential moving average of the "
                                      "weights with this decay (e.g. 0.999): validation, "
                                      "best.keras, classifier.keras and exports use it. Off by "
                                      "default.", above=0.0, below=1.0)
    ema_warmup: bool | None = setting(None, "The average's decay warms up as TensorFlow 1's "
                                      "ExponentialMovingAverage(num_updates=t) did: "
                                      "min(--ema_decay, (1 + t) / (10 + t)) at step t "
                                      "(default: on whenever --ema_decay is set; without it "
                                      "the first steps' weights linger in the average).")


@dataclasses.dataclass(frozen=True)
class ReportConfig:
    """The final report on the test split."""

    eval_examples: int | None = setting(None, "Test inputs of the final report (default: "
                                        "all).", minimum=1)
    eval_batch_size: int = setting(256, "Inputs per batch of the validation and the report.",
                                   minimum=1)


@dataclasses.dataclass(frozen=True)
class ComputeConfig:
    """Precision, compilation, distribution strategy and threads."""

    mixed_precision: bool = setting(False, "Compute in float16 on GPU, bfloat16 on CPU/TPU, "
                                    "with float32 variables, losses and adversarial "
                                    "distributions.")
    jit_compile: bool = setting(False, "Compile train steps with XLA (usually a win on GPU "
                                "and TPU, a loss on CPU).")
    strategy: str = setting("default", "default (one device), mirrored (all local GPUs), "
                            "multiworker (the machines of TF_CONFIG; docs/multiworker.md), "
                            "tpu.", choices=STRATEGIES)
    tpu: str | None = setting(None, "TPU name or grpc:// address for --strategy=tpu.")
    intra_op_threads: int = setting(0, "TensorFlow's threads per op (0: its default).",
                                    minimum=0)
    inter_op_threads: int = setting(0, "TensorFlow's threads running ops side by side (0: "
                                    "its default).", minimum=0)
    deterministic_ops: bool = setting(False, "TensorFlow's deterministic kernels (needed "
                                      "for a fixed run on GPUs; a CPU run is deterministic "
                                      "without it).")


@dataclasses.dataclass(frozen=True)
class RunSettings:
    """The run itself: its seed, its folder, how much it prints."""

    seed: int = setting(0, "Seed of initialisation, data order and the method's noise.",
                        minimum=0)
    workdir: str = setting("runs/adt", "Output folder; rerunning resumes the run there.")
    verbose: int | None = setting(None, "0 silent, 1 progress bar, 2 one line per epoch "
                                  "(default: 1 on a terminal, 2 into a file or pipe).",
                                  minimum=0, maximum=2)


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything a training run needs: the only description of one.

    Sections: `data`, `model`, `method`, `threat`, `optim`, `validation`, `report`,
    `compute`, `run`. Build one with keyword sections, `override` it by dotted paths, or
    load a recipe file (`load_config_file`).
    """

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    method: MethodConfig = dataclasses.field(default_factory=MethodConfig)
    threat: ThreatConfig = dataclasses.field(default_factory=ThreatConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    validation: ValidationConfig = dataclasses.field(default_factory=ValidationConfig)
    report: ReportConfig = dataclasses.field(default_factory=ReportConfig)
    compute: ComputeConfig = dataclasses.field(default_factory=ComputeConfig)
    run: RunSettings = dataclasses.field(default_factory=RunSettings)

    @classmethod
    def from_flags(cls, base: RunConfig | None = None, **values: Any) -> RunConfig:
        """A config from settings named as the command line names them (`epochs=5`,
        `method="pgd_at"`, `method_params={"attack_steps": 2}`), over `base` (default: the
        schema's defaults); unknown names are refused naming the closest flags."""
        paths = flag_paths()
        unknown = [k for k in values if k not in paths]
        if unknown:
            raise ValueError(_unknown_message(unknown[0], paths, "The command line"))
        return override(base or cls(), {paths[k]: v for k, v in values.items()})

    def to_dict(self) -> dict[str, Any]:
        """The config as nested plain data (tuples as lists), as config.json holds it."""
        return _plain(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "config") -> RunConfig:
        """A config from nested plain data (a record's sections); unknown keys are refused
        naming the closest known ones, values are checked by type."""
        if not isinstance(data, Mapping):
            raise ValueError(f"{where} must be a mapping of sections, got {data!r}.")  # noqa: TRY004
        sections = {f.name: f for f in dataclasses.fields(cls)}
        unknown = [k for k in data if k not in sections]
        if unknown:
            raise ValueError(_unknown_message(unknown[0], sections, where))
        values = {}
        for name, section in data.items():
            section_cls = _section_class(sections[name])
            if not isinstance(section, Mapping):
                raise ValueError(f"{where}.{name} must be a mapping, got {section!r}.")  # noqa: TRY004
            values[name] = _section_from_dict(section_cls, section, f"{where}.{name}")
        return cls(**values)

    def validate(self) -> RunConfig:
        """Checks every field's type, choices and range (what needs no registry or data);
        returns self. ValueError names the field's flag."""
        for path, field, value in leaves(self):
            check_field(field, value, flag_name(path, field))
        validation_pgd_steps(self.validation.attack)
        if self.validation.ema_warmup and self.validation.ema_decay is None:
            raise ValueError("--ema_warmup=true applies to a weight average: give "
                             "--ema_decay too (e.g. --ema_decay=0.999).")
        return self


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _section_class(field: dataclasses.Field) -> type:
    return typing.get_type_hints(RunConfig)[field.name]


def _section_from_dict(section_cls: type, data: Mapping[str, Any], where: str):
    fields = {f.name: f for f in dataclasses.fields(section_cls)}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ValueError(_unknown_message(unknown[0], fields, where))
    hints = typing.get_type_hints(section_cls)
    values = {}
    for name, value in data.items():
        values[name] = coerce(value, hints[name], f"{where}.{name}")
    return section_cls(**values)


def _unknown_message(key: str, known: Mapping[str, Any], where: str) -> str:
    close = difflib.get_close_matches(key, list(known), n=3)
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    return (f"{where} has no setting {key!r}{hint}; known: {', '.join(known)}.")


def leaves(config: RunConfig) -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """(dotted path, field, value) of every setting, section by section."""
    for section in dataclasses.fields(config):
        value = getattr(config, section.name)
        for field in dataclasses.fields(value):
            yield f"{section.name}.{field.name}", field, getattr(value, field.name)


def schema_fields() -> Iterator[tuple[str, dataclasses.Field, Any]]:
    """(dotted path, field, type) of every setting of the schema."""
    for section in dataclasses.fields(RunConfig):
        section_cls = _section_class(section)
        hints = typing.get_type_hints(section_cls)
        for field in dataclasses.fields(section_cls):
            yield f"{section.name}.{field.name}", field, hints[field.name]


def flag_name(path: str, field: dataclasses.Field) -> str:
    """The command-line flag of a setting: its own `flag`, else the field's name."""
    return field.metadata.get("flag") or path.split(".")[-1]


def flag_paths() -> dict[str, str]:
    """Flag name -> dotted path, for every setting (each flag names one setting)."""
    out: dict[str, str] = {}
    for path, field, _ in schema_fields():
        name = flag_name(path, field)
        if name in out:
            raise RuntimeError(f"Two settings share the flag --{name}: {out[name]}, {path}.")
        out[name] = path
    return out


def get_path(config: RunConfig, path: str) -> Any:
    section, name = path.split(".")
    return getattr(getattr(config, section), name)


def override(config: RunConfig, changes: Mapping[str, Any]) -> RunConfig:
    """`config` with the settings of `changes` (dotted path -> value) replaced; values are
    coerced to the field's type (a string is parsed as on the command line)."""
    hints = {path: kind for path, _, kind in schema_fields()}
    by_section: dict[str, dict[str, Any]] = {}
    for path, value in changes.items():
        if path not in hints:
            raise ValueError(_unknown_message(path, hints, "The config"))
        section, name = path.split(".")
        by_section.setdefault(section, {})[name] = coerce(value, hints[path], path)
    replaced = {section: dataclasses.replace(getattr(config, section), **values)
                for section, values in by_section.items()}
    return dataclasses.replace(config, **replaced)


# ----------------------------------------------------------------------------- values
def float_or_none() -> Any:
    return float | None


def optional_base(kind: Any) -> tuple[Any, bool]:
    """(X, True) for a type `X | None`, (kind, False) otherwise."""
    args = typing.get_args(kind)
    if type(None) in args:
        rest = [a for a in args if a is not type(None)]
        return rest[0], True
    return kind, False


def parse_value(text: Any, kind: Any, name: str) -> Any:
    """A setting's value from its command-line text (or a value of a config file)."""
    return coerce(text, kind, name)


def coerce(value: Any, kind: Any, name: str) -> Any:
    """`value` as type `kind` (bool, int, float, str, X | None, tuple[int, ...],
    dict[str, Any]); strings are parsed as the command line reads them."""
    base, optional = optional_base(kind)
    if optional and (value is None or (isinstance(value, str)
                                       and value.strip().lower() in ("none", "null"))):
        return None
    if value is None:
        raise ValueError(f"{name} must be set, got None.")
    if base is bool:
        return parse_bool(value, name)
    if base in (int, float):
        return parse_number(value, name, base)
    if base is str:
        if not isinstance(value, str):
            raise ValueError(f"{name} must be text, got {value!r}.")
        return value
    origin = typing.get_origin(base)
    if origin is tuple:
        items = value.split(",") if isinstance(value, str) else value
        if not isinstance(items, (list, tuple)):
            raise ValueError(f"{name} must be a list of integers, got {value!r}.")
        return tuple(parse_number(v, f"{name} entries", int) for v in items if str(v).strip())
    if origin is dict:
        if isinstance(value, (str, list)):
            return parse_assignments(value, name)
        if not isinstance(value, Mapping):
            raise ValueError(f"{name} must be NAME=VALUE,... or a mapping, got {value!r}.")
        return dict(value)
    raise TypeError(f"No parser for {name}'s type {kind!r}.")


def parse_assignments(items: str | list[str], name: str) -> dict[str, str]:
    """"NAME=VALUE,..." (or absl's list of such items) -> {NAME: 'VALUE'} with the values
    left as text: each is typed later from the signature it belongs to (`typed_arguments`).
    The item `help` (no value) asks for the list of arguments: {'help': ''}
    (`adt_tf.core.checks.parse_assignments`, the one parser of such flags)."""
    return checks.parse_assignments(items, name, as_text=True, bare=(HELP,))


def check_field(field: dataclasses.Field, value: Any, flag: str) -> None:
    """The field's choices and range, for a value of its type; ValueError names --flag."""
    meta = field.metadata
    if value is None:
        return
    if meta.get("choices") and value not in meta["choices"]:
        raise ValueError(f"--{flag} must be one of {', '.join(meta['choices'])}, got "
                         f"{value!r}.")
    values = value if isinstance(value, tuple) else (value,)
    for v in values:
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            continue
        if not math.isfinite(v):
            raise ValueError(f"--{flag} must be finite, got {value!r}.")
        low, high = meta.get("minimum"), meta.get("maximum")
        above, below = meta.get("above"), meta.get("below")
        if ((low is not None and v < low) or (high is not None and v > high)
                or (above is not None and v <= above) or (below is not None and v >= below)):
            raise ValueError(f"--{flag} must be {_range_text(meta)}, got {value!r}.")


def _range_text(meta: Mapping[str, Any]) -> str:
    parts = []
    if meta.get("minimum") is not None:
        parts.append(f">= {meta['minimum']:g}")
    if meta.get("above") is not None:
        parts.append(f"> {meta['above']:g}")
    if meta.get("maximum") is not None:
        parts.append(f"<= {meta['maximum']:g}")
    if meta.get("below") is not None:
        parts.append(f"< {meta['below']:g}")
    return " and ".join(parts)


def validation_pgd_steps(attack: str) -> int:
    """k of a `--validation_attack` "pgd<k>"; ValueError naming the flag otherwise."""
    match = re.fullmatch(r"pgd(\d+)", str(attack))
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"--validation_attack must be pgd<steps> (e.g. pgd10: the "
                         f"evaluation's PGD, steps of epsilon/4 from a random start), got "
                         f"{attack!r}.")
    return int(match.group(1))


def typed_arguments(given: Mapping[str, Any], signature: Mapping[str, Any], flag: str,
                    owner: str, takers=None) -> dict[str, Any]:
    """The arguments `given` (text from the command line, or values of a config file) typed
    by the defaults of `signature` (name -> default; a None default is a float set by the
    threat model): booleans read true/false/1/0, numbers as numbers, text as text.

    `takers(name)`, if given, names the others that take an argument `owner` does not.

    Raises:
        ValueError: an argument `owner` does not take (naming the closest), or a value of
            the wrong type (naming `--flag` and the argument).
    """
    out = {}
    for name, value in given.items():
        if name not in signature:
            close = difflib.get_close_matches(name, list(signature), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            others = takers(name) if takers is not None else []
            if others:
                hint += f" ({name} applies to {', '.join(others)})"
            takes = ", ".join(signature) or "no arguments of its own"
            raise ValueError(f"--{flag}: {owner} does not take {name!r}{hint}; it takes "
                             f"{takes}.")
        default = signature[name]
        kind: Any = (float | None) if default is None else type(default)
        out[name] = coerce(value, kind, f"--{flag} {name}")
    return out


# ------------------------------------------------------------------------ config files
#: Recipes shipped with the package, by name (--config=NAME): adt_tf/recipes/NAME.py.
RECIPES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                           "recipes")


def recipe_names() -> list[str]:
    return sorted(f[:-3] for f in os.listdir(RECIPES_DIR)
                  if f.endswith(".py") and not f.startswith("_"))


def load_config_file(spec: str) -> RunConfig:
    """The `RunConfig` of a config file: a path to a Python file with `get_config()`, or
    the name of a recipe shipped in adt_tf/recipes (`recipe_names()`).

    Raises:
        ValueError: naming the file, when it does not exist, does not import, has no
            `get_config()`, or that does not return a RunConfig.
    """
    path = spec
    if not os.path.exists(path) and re.fullmatch(r"\w+", spec):
        path = os.path.join(RECIPES_DIR, f"{spec}.py")
        if not os.path.exists(path):
            raise ValueError(f"--config={spec}: no such file, nor a recipe of that name "
                             f"(recipes: {', '.join(recipe_names())}).")
    if not os.path.isfile(path):
        raise ValueError(f"--config={spec}: no such file.")
    where = f"--config={spec}" + ("" if os.path.abspath(path) == os.path.abspath(spec)
                                  else f" ({path})")
    module_spec = importlib.util.spec_from_file_location(
        f"adt_config_{abs(hash(os.path.abspath(path)))}", path)
    if module_spec is None or module_spec.loader is None:
        raise ValueError(f"{where} is not a Python file.")
    module = importlib.util.module_from_spec(module_spec)
    try:
        module_spec.loader.exec_module(module)
    except Exception as err:  # a config file is user code: any failure is its error
        raise ValueError(f"{where} does not import ({type(err).__name__}: {err}).") from None
    get_config = getattr(module, "get_config", None)
    if not callable(get_config):
        raise ValueError(f"{where} has no get_config() function.")  # noqa: TRY004
    try:
        config = get_config()
    except Exception as err:  # noqa: BLE001 - reported with the file's name
        raise ValueError(f"{where}: its get_config() failed ({type(err).__name__}: "
                         f"{err}).") from None
    if not isinstance(config, RunConfig):
        raise ValueError(f"--config={spec}: get_config() of {path} must return an "  # noqa: TRY004
                         f"adt_tf.training.config.RunConfig, got {type(config).__name__}.")
    return config


# ----------------------------------------------------------------- the flat version 1
#: The fields of a version-1 record: the settings by their flag names, flat.
FLAT_FIELDS = (
    "workdir", "method", "dataset", "data_dir", "model", "model_params", "normalize", "epochs",
    "batch_size", "lr", "lr_decay_epochs", "lr_decay_factor", "lr_schedule", "momentum",
    "weight_decay", "weight_decay_form", "epsilon", "norm", "method_params", "seed",
    "max_train_examples", "eval_examples", "eval_batch_size", "jit_compile",
    "mixed_precision", "strategy", "tpu", "verbose", "validation_examples",
    "validation_every", "validation_attack", "ema_decay")
#: Defaults of version-1 fields that differ from this schema's (what a flat record that
#: lacks them meant when it was written).
FLAT_DEFAULTS = {"optim.lr_decay_epochs": (75, 90, 100), "optim.epochs": 76,
                 "validation.ema_warmup": False}


def migrate_flat_record(flat: Mapping[str, Any]) -> tuple[RunConfig, int]:
    """(config, algorithm version) of a version-1 record (the flat config.json written
    before this schema): each field moves to its section; a field the record lacks takes
    the value of its time; `algorithm_version` reads 1 when absent."""
    paths = flag_paths()
    changes = dict(FLAT_DEFAULTS)
    changes.update({paths[key]: flat[key] for key in FLAT_FIELDS if key in flat})
    return override(RunConfig(), changes), int(flat.get("algorithm_version", 1))


__all__ = ["ALGORITHM_VERSION", "CHANGED_ALGORITHMS", "NORMS", "SCHEMA_VERSION", "ComputeConfig",
           "DataConfig", "MethodConfig", "ModelConfig", "OptimConfig", "ReportConfig",
           "RunConfig", "algorithm_version",
           "RunSettings", "ThreatConfig", "ValidationConfig", "check_field", "coerce",
           "flag_name", "flag_paths", "get_path", "leaves", "load_config_file",
           "migrate_flat_record", "override", "parse_bool", "parse_number", "parse_value",
           "recipe_names", "schema_fields", "setting", "typed_arguments",
           "validation_pgd_steps"]
