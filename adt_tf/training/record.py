"""A run's record: its config resolved once (`adt_tf.training.resolve`), written once to
`<workdir>/config.json`, read back by every command.

`RunRecord` is the resolved config (every value explicit: epsilon, every method and model
argument, example counts, the validation seed) and what was derived from the data (the
validation split's indices, the shapes, the precision policy). `write_record` stores it with
the schema version; `read_record` reads it back (records of the flat version-1 layout too);
`differences` is the one comparison that decides whether two records describe the same run,
allowing `RESUMABLE` to change and leaving out the method arguments the run never reads.
Imports no TensorFlow until `differences` asks the method which those are.

Example:
    >>> from adt_tf.training.config import RunConfig, override
    >>> old = RunRecord(RunConfig())
    >>> new = RunRecord(override(RunConfig(), {"optim.epochs": 90, "optim.lr": 0.05}))
    >>> differences(old, new)  # more epochs extend a run; another rate is another run
    [('optim.lr', 0.1, 0.05)]
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Mapping
from typing import Any

from adt_tf.core import files
from adt_tf.training.config import (
    ALGORITHM_VERSION,
    SCHEMA_VERSION,
    RunConfig,
    get_path,
    leaves,
    migrate_flat_record,
)
from adt_tf.training.workdir import RECORD_FILE

#: What may change when a run is resumed in its workdir: where it lives (the workdir, the
#: data's location), how much it prints, the threads, the size of the final test report,
#: and the epochs (more of them extend the run; not under the cyclic schedule, whose
#: triangle spans the run).
RESUMABLE = ("run.workdir", "run.verbose", "data.data_dir", "compute.intra_op_threads",
             "compute.inter_op_threads", "compute.deterministic_ops", "report.eval_examples",
             "optim.epochs")


@dataclasses.dataclass(frozen=True)
class RunRecord:
    """A resolved run: its explicit config and what was derived from the data.

    Attributes:
        config: the `RunConfig` with every value explicit (no None where a value was
            chosen: epsilon, method and model arguments, example counts, validation seed,
            verbosity).
        algorithm_version: the methods' algorithms it was trained with.
        precision_policy: the Keras dtype policy of training ("float32", "mixed_bfloat16",
            "mixed_float16").
        validation_indices: the held-out training images (indices into the loaded training
            set), empty without a validation split.
        input_shape, num_classes: of the dataset.
        schema_version: of the record it was read from (1: a flat record, whose config is
            not resolved).
    """

    config: RunConfig
    algorithm_version: int = ALGORITHM_VERSION
    precision_policy: str = "float32"
    validation_indices: tuple[int, ...] = ()
    input_shape: tuple[int, ...] = ()
    num_classes: int = 0
    schema_version: int = SCHEMA_VERSION

    @functools.cached_property
    def threat(self):
        """The run's ball (`adt_tf.threat`), made once (`resolve` hands it the one it made)."""
        from adt_tf.threat import make_threat

        return make_threat(self.config.threat.norm, self.config.threat.epsilon)

    def to_dict(self) -> dict[str, Any]:
        return {"schema_version": SCHEMA_VERSION, "algorithm_version": self.algorithm_version,
                **self.config.to_dict(),
                "resolved": {"precision_policy": self.precision_policy,
                             "input_shape": list(self.input_shape),
                             "num_classes": self.num_classes,
                             "validation_indices": list(self.validation_indices)}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = RECORD_FILE) -> RunRecord:
        """A record from its JSON (either schema version)."""
        if "schema_version" not in data:
            config, version = migrate_flat_record(data)
            return cls(config=config, algorithm_version=version, schema_version=1)
        version = data["schema_version"]
        if version != SCHEMA_VERSION:
            raise ValueError(f"{where} has schema version {version!r}; this adt-tf reads "
                             f"{SCHEMA_VERSION} (and the flat records before it).")
        sections = {k: v for k, v in data.items()
                    if k not in ("schema_version", "algorithm_version", "resolved")}
        resolved = data.get("resolved", {})
        return cls(config=RunConfig.from_dict(sections, where),
                   algorithm_version=int(data.get("algorithm_version", 1)),
                   precision_policy=resolved.get("precision_policy", "float32"),
                   validation_indices=tuple(resolved.get("validation_indices", ())),
                   input_shape=tuple(resolved.get("input_shape", ())),
                   num_classes=int(resolved.get("num_classes", 0)))


def write_record(record: RunRecord, workdir: str) -> str:
    """Writes `<workdir>/config.json` atomically; returns its path."""
    return files.write_json(os.path.join(workdir, RECORD_FILE), record.to_dict())


def record_path(workdir: str) -> str:
    return os.path.join(workdir, RECORD_FILE)


def read_record(path: str) -> RunRecord:
    """The record at `path` (a config.json, or a workdir holding one).

    Raises:
        ValueError: naming the file, when it is missing or not a readable record.
    """
    if os.path.isdir(path):
        path = record_path(path)
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable run record ({err}); move the workdir "
                         "aside or use a new --workdir.") from err
    try:
        return RunRecord.from_dict(data, path)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path} is not a readable run record ({err}); move the workdir "
                         "aside or use a new --workdir.") from err


def differences(old: RunRecord, new: RunRecord,
                resumable: tuple[str, ...] = RESUMABLE) -> list[tuple[str, Any, Any]]:
    """(setting, old value, new value) of every difference between two records that
    `resumable` does not allow: the one answer to "is this the same run?" (empty: yes).
    The cyclic schedule's epochs are never resumable (its triangle spans the run). The
    method arguments the asked run never reads (its method's `inert_arguments`, e.g. the
    factor step of ADT's diagonal family) are left out: a changed default of one of them
    does not make another run."""
    if new.config.optim.lr_schedule == "cyclic":
        resumable = tuple(p for p in resumable if p != "optim.epochs")
    inert = _inert_arguments(new.config)
    diff = []
    for path, _, value in leaves(new.config):
        before, after = _plain(get_path(old.config, path)), _plain(value)
        if path == "method.params" and isinstance(before, dict) and isinstance(after, dict):
            before, after = ({k: v for k, v in d.items() if k not in inert}
                             for d in (before, after))
        if path not in resumable and before != after:
            diff.append((path, before, after))
    if old.algorithm_version != new.algorithm_version:
        diff.append(("algorithm_version", old.algorithm_version, new.algorithm_version))
    if tuple(old.validation_indices) != tuple(new.validation_indices) and old.schema_version > 1:
        diff.append(("validation indices", f"{len(old.validation_indices)} images",
                     f"{len(new.validation_indices)} other images"))
    return diff


def _inert_arguments(config: RunConfig) -> tuple[str, ...]:
    """The method's arguments that cannot change this run (its `inert_arguments`: e.g. the
    factor settings of ADT's diagonal family)."""
    from adt_tf.methods import get_method  # here: the methods import TensorFlow

    return get_method(config.method.name).inert_arguments(config.method.params)


def describe_differences(diff: list[tuple[str, Any, Any]]) -> str:
    """"optim.lr: 0.1 -> 0.05, method.params.inner_steps: 7 -> 5" (the fields that differ,
    method and model arguments one by one)."""
    parts = []
    for path, old, new in diff:
        if isinstance(old, dict) and isinstance(new, dict):
            for key in sorted(set(old) | set(new)):
                if old.get(key) != new.get(key):
                    parts.append(f"{path}.{key}: {old.get(key)!r} -> {new.get(key)!r}")
        else:
            parts.append(f"{path}: {old!r} -> {new!r}")
    return ", ".join(parts)


def _plain(value: Any) -> Any:
    return json.loads(json.dumps(value))


__all__ = ["RESUMABLE", "RunRecord", "describe_differences", "differences",
           "read_record", "record_path", "write_record"]
