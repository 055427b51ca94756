"""Resolving a run's config once: every value explicit, against the dataset and registries.

`resolve(config)` checks a `RunConfig` and makes it fully explicit: the budget epsilon and
every step size as numbers, every method and model argument (defaults included, typed from
their signatures: a boolean reads true/false/1/0 only), the number of training and report
images, the validation split's seed and indices, the precision policy and the verbosity.
The result is a `RunRecord` (`adt_tf.training.record`), what `<workdir>/config.json` holds
and what every command reads back instead of deriving again.

Example:
    >>> from adt_tf.training.config import RunConfig, override
    >>> record = resolve(override(RunConfig(), {"optim.epochs": 2}))  # doctest: +SKIP
    >>> record.config.threat.epsilon, record.config.method.params["inner_steps"]  # doctest: +SKIP
    (0.03137254901960784, 7)
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import sys
from collections.abc import Mapping
from typing import Any

from adt_tf import data as data_lib
from adt_tf.training.config import RunConfig, algorithm_version, override, typed_arguments
from adt_tf.training.record import RunRecord

#: Arguments of a model builder that the run sets itself (not --model_params).
MODEL_SHARED_ARGUMENTS = ("input_shape", "num_classes", "mean", "std", "name")


def method_signature(name: str) -> dict[str, Any]:
    """The method's own constructor arguments and their defaults."""
    from adt_tf.methods import method_arguments

    return method_arguments(name)


def model_signature(name: str) -> dict[str, Any]:
    """The model builder's own keyword arguments and their defaults (beyond the shape,
    classes and normalisation the run sets)."""
    from adt_tf.models import MODELS

    builder = MODELS.lookup(name)
    params = inspect.signature(builder).parameters
    return {p: v.default for p, v in params.items()
            if p not in MODEL_SHARED_ARGUMENTS and v.default is not inspect.Parameter.empty}


def describe_arguments(signature: Mapping[str, Any], owner: str) -> str:
    """The arguments of a method or model with their types and defaults (what
    `--method_params=help` prints)."""
    if not signature:
        return f"{owner} takes no arguments of its own."
    lines = [f"{owner} takes:"]
    for name, default in signature.items():
        kind = "float" if default is None else type(default).__name__
        shown = ("set from --norm or the other arguments" if default is None
                 else json.dumps(default))
        lines.append(f"  {name}: {kind}, default {shown}")
    return "\n".join(lines)


def _auto_verbose() -> int:
    """1 (a progress bar) on a terminal, 2 (one line per epoch) into a file or a pipe."""
    try:
        return 1 if sys.stdout.isatty() else 2
    except (AttributeError, ValueError):
        return 2


def resolve(config: RunConfig, splits: data_lib.Splits | None = None, *,
            strategy=None) -> RunRecord:
    """The run's record: `config` checked and made fully explicit (see the module's
    docstring). Reads the dataset unless `splits` (loaded with the config's
    `max_train_examples`) is given; builds nothing and writes nothing.

    Raises:
        ValueError: naming the flag and value at fault: a value out of range, an unknown
            method, model or dataset, an argument the method or model does not take or of
            the wrong type, a validation split the data cannot give.
    """
    from adt_tf.core.precision import mixed_policy_name
    from adt_tf.data import resolve_threat
    from adt_tf.methods import check_method_arguments, get_method

    config.validate()
    method_cls = get_method(config.method.name)
    if not config.data.dataset.startswith(data_lib.NPZ_PREFIX):
        data_lib.dataset_info(config.data.dataset)
    method_params = typed_arguments(config.method.params, method_signature(config.method.name),
                                    "method_params", f"--method={config.method.name}",
                                    takers=_methods_taking)
    model_defaults = model_signature(config.model.name)
    model_params = typed_arguments(config.model.params, model_defaults, "model_params",
                                   f"--model={config.model.name}")
    # The method's own checks (ranges, choices) on a throwaway model, before data is read.
    threat = None
    if config.threat.epsilon is not None or not config.data.dataset.startswith(
            data_lib.NPZ_PREFIX):
        threat = resolve_threat(config.threat.norm, config.threat.epsilon,
                                config.data.dataset)
    if splits is None:
        if threat is not None:
            check_method_arguments(config.method.name, epsilon=threat, seed=config.run.seed,
                                   **_with_norm_defaults(method_cls, method_params, threat))
        splits = data_lib.load(config.data.dataset, config.data.data_dir,
                               config.data.max_train_examples)
    if threat is None:
        threat = resolve_threat(config.threat.norm, config.threat.epsilon, splits.info)
    method_params = _with_norm_defaults(method_cls, method_params, threat)
    check_method_arguments(config.method.name, input_shape=splits.input_shape, epsilon=threat,
                           seed=config.run.seed, **method_params)
    full_method = {**method_signature(config.method.name), **method_params}
    full_model = {**model_defaults, **model_params}
    n_train = len(splits.x_train)
    n_test = len(splits.x_test)
    validation_seed = (config.validation.seed if config.validation.seed is not None
                       else config.run.seed)
    indices: tuple[int, ...] = ()
    if config.validation.examples:
        n = config.validation.examples
        classes = len(set(splits.y_train.tolist()))
        # One bound for both needs: a class-stratified draw (one per class held out, one per
        # class left) and a batch left to train on.
        low, high = classes, min(n_train - classes, n_train - config.optim.batch_size)
        if not low <= n <= high:
            raise ValueError(f"--validation_examples must be between {low} (one per class) "
                             f"and {max(high, 0)} (a batch of --batch_size="
                             f"{config.optim.batch_size} and an image of every class left to "
                             f"train on) for these {n_train} training images, got {n}.")
        _, held = data_lib.stratified_split(splits.y_train, n, validation_seed)
        indices = tuple(int(i) for i in held)
    eval_examples = (n_test if config.report.eval_examples is None
                     else min(config.report.eval_examples, n_test))
    resolved = override(config, {
        "threat.epsilon": threat.epsilon,
        "method.params": full_method,
        "model.params": full_model,
        "data.max_train_examples": n_train,
        "report.eval_examples": eval_examples,
        "validation.seed": validation_seed,
        "validation.ema_warmup": (config.validation.ema_decay is not None
                                  if config.validation.ema_warmup is None
                                  else config.validation.ema_warmup),
        "run.verbose": _auto_verbose() if config.run.verbose is None else config.run.verbose,
    })
    policy = mixed_policy_name(strategy) if config.compute.mixed_precision else "float32"
    record = RunRecord(config=resolved, algorithm_version=algorithm_version(resolved),
                       precision_policy=policy, validation_indices=indices,
                       input_shape=tuple(int(d) for d in splits.input_shape),
                       num_classes=int(splits.info.num_classes))
    record.__dict__["threat"] = threat  # the ball made here (`RunRecord.threat` caches it)
    return record


def resolve_recorded(record: RunRecord, splits: data_lib.Splits | None = None) -> RunRecord:
    """A record as comparable with a resolved one: a flat record of version 1 (written
    before the schema, with settings left to be derived such as `epsilon: null`) is resolved
    as it was run, keeping its algorithm version; a record of this schema is returned as it
    is."""
    if record.schema_version >= RunRecord.schema_version:
        return record
    resolved = resolve(record.config, splits)
    return dataclasses.replace(resolved, algorithm_version=record.algorithm_version,
                               schema_version=record.schema_version)


def _methods_taking(name: str) -> list[str]:
    from adt_tf.methods import METHODS

    return [m for m in METHODS if name in method_signature(m)]


def _with_norm_defaults(method_cls, params: dict[str, Any], threat) -> dict[str, Any]:
    """`params` with each argument whose default depends on the threat model or on other
    arguments (None in the signature) set to its value (`argument_defaults`), unless
    given."""
    out = dict(params)
    for name, value in method_cls.argument_defaults(threat, out).items():
        if out.get(name) is None:
            out[name] = value
    return out


__all__ = ["MODEL_SHARED_ARGUMENTS", "describe_arguments", "method_signature",
           "model_signature", "resolve", "resolve_recorded"]
