"""One training run, from a plain-data config: data, model, method, fit, save, report.

The absl command line `adt-train` (trainers/train.py) fills a `TrainConfig` from flags and
calls `run_training`; benchmarks and the tuner call it directly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import math
import os
import re
import socket
from typing import Any

import keras
import tensorflow as tf

from adt_tf import checks, files
from adt_tf import data as data_lib
from adt_tf.checkpoints import BEST_FILE, BestCheckpoint, RobustAccuracyCallback, read_best
from adt_tf.distributed import (
    STRATEGIES,
    SharedBackupAndRestore,
    make_strategy,
    restored_epoch,
    shard_by_data,
    worker_role,
)
from adt_tf.evaluation import evaluate
from adt_tf.methods import AmortizedAdversarialTrainer, check_method_arguments, get_method
from adt_tf.models import MODELS, build_model
from adt_tf.optimizers import LR_SCHEDULES, check_weight_decay_form, make_optimizer
from adt_tf.precision import precision_policy
from adt_tf.threat import THREATS, Ball, LinfBall, describe_budget, resolve_threat

# Settings that may change when a run is resumed in the same workdir (the workdir itself: the
# folder is the run, however its path is written or wherever it was moved).
RESUMABLE_CHANGES = ("workdir", "epochs", "eval_examples", "verbose")
#: The version of the methods' algorithms a run was trained with, recorded in config.json so
#: that a run never resumes under changed algorithms. 2: the baselines as their authors ran
#: them (issue 27: AT_PGD and ALP on the last PGD iterate, TRADES's three forwards, Fast AT's
#: training-mode FGSM, the reference initialisations); runs written before have none (1).
ALGORITHM_VERSION = 2


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs, as plain data (written to <workdir>/config.json).

    Attributes mirror the `adt-train` flags; `method_params` holds the method's own
    constructor arguments (e.g. entropy_weight, inner_steps for adt_exp).
    """

    workdir: str
    method: str = "adt_exp"
    dataset: str = data_lib.SAMPLE
    data_dir: str | None = None
    model: str = "small_cnn"
    model_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    normalize: bool = False  # the ADT reference feeds [0, 1] pixels to its WRN as they are
    epochs: int = 76
    batch_size: int = 64
    lr: float = 0.1
    lr_decay_epochs: tuple[int, ...] = (75, 90, 100)
    lr_decay_factor: float = 0.1
    lr_schedule: str = "step"
    momentum: float = 0.9
    weight_decay: float = 2e-4
    weight_decay_form: str = "coupled"
    epsilon: float | None = None
    norm: str = "linf"
    method_params: dict[str, Any] = dataclasses.field(default_factory=dict)
    seed: int = 0
    max_train_examples: int | None = None
    eval_examples: int | None = None
    eval_batch_size: int = 256
    jit_compile: bool = False
    mixed_precision: bool = False
    strategy: str = "default"
    tpu: str | None = None
    verbose: int = 1
    validation_examples: int = 0
    validation_every: int = 1
    validation_attack: str = "pgd10"
    ema_decay: float | None = None
    algorithm_version: int = ALGORITHM_VERSION

    def threat(self, info: data_lib.DatasetInfo | None = None) -> Ball:
        """The run's threat model: `norm` with `epsilon`, else with the dataset's default
        budget (`info` saves reading an `npz:` source for it). A run resolves it once and
        hands the ball down."""
        return resolve_threat(self.norm, self.epsilon, info or self.dataset)

    def validate(self) -> None:
        """Raises ValueError for bad settings, before any data is read or model built."""
        get_method(self.method)
        MODELS.lookup(self.model)
        checks.check_choice(self.strategy, "strategy", STRATEGIES)
        if not self.dataset.startswith(data_lib.NPZ_PREFIX):
            data_lib.dataset_info(self.dataset)
        checks.check_choice(self.norm, "norm", THREATS)
        if self.epsilon is not None:
            THREATS[self.norm].check_radius(self.epsilon)
        checks.check_positive_int(self.epochs, "epochs")
        checks.check_positive_int(self.batch_size, "batch_size")
        checks.check_positive(self.lr, "lr")
        checks.check_in_range(self.lr_decay_factor, "lr_decay_factor", 0.0, 1.0)
        checks.check_in_range(self.momentum, "momentum", 0.0, 1.0)
        checks.check_non_negative(self.weight_decay, "weight_decay")
        check_weight_decay_form(self.weight_decay_form)
        checks.check_choice(self.lr_schedule, "lr_schedule", LR_SCHEDULES)
        if self.max_train_examples is not None:
            checks.check_positive_int(self.max_train_examples, "max_train_examples")
        if self.eval_examples is not None:
            checks.check_positive_int(self.eval_examples, "eval_examples")
        for e in self.lr_decay_epochs:
            checks.check_positive_int(e, "lr_decay_epochs entries")
        if isinstance(self.validation_examples, bool) or not isinstance(
                self.validation_examples, int) or self.validation_examples < 0:
            raise ValueError(f"--validation_examples must be an integer >= 0 (0: no "
                             f"validation split), got {self.validation_examples!r}.")
        checks.check_positive_int(self.validation_every, "--validation_every")
        validation_pgd_steps(self.validation_attack)
        if self.ema_decay is not None and not 0.0 < float(self.ema_decay) < 1.0:
            raise ValueError(f"--ema_decay must be in (0, 1) (e.g. 0.999), got "
                             f"{self.ema_decay!r}.")


def validation_pgd_steps(attack: str) -> int:
    """k of a `--validation_attack` "pgd<k>" (the evaluation's PGD, k steps of epsilon/4
    from a uniform random start); ValueError naming the flag otherwise."""
    match = re.fullmatch(r"pgd(\d+)", str(attack))
    if match is None or int(match.group(1)) < 1:
        raise ValueError(f"--validation_attack must be pgd<steps> (e.g. pgd10: the "
                         f"evaluation's PGD, steps of epsilon/4 from a random start), got "
                         f"{attack!r}.")
    return int(match.group(1))


def hold_out_validation(config: TrainConfig, splits: data_lib.Splits, out_dir: str):
    """The run's training part and its validation split (`config.validation_examples` of the
    training images, a seeded class-stratified draw: `data_lib.stratified_split` with the
    run's seed), recorded in `<out_dir>/validation_split.json` (the held-out indices of the
    loaded training set). Returns (training Splits, (x_val, y_val)); the test arrays are
    kept for the final report, never used to choose anything."""
    n = config.validation_examples
    limit = len(splits.x_train) - config.batch_size
    if n > limit:
        raise ValueError(f"--validation_examples={n} leaves fewer than one batch "
                         f"(--batch_size={config.batch_size}) of the {len(splits.x_train)} "
                         f"training images to train on; give at most {max(limit, 0)}.")
    train, held = data_lib.stratified_split(splits.y_train, n, config.seed)
    record = {"validation_examples": n, "seed": config.seed, "dataset": config.dataset,
              "max_train_examples": config.max_train_examples,
              "indices": held.tolist()}
    files.write_json(os.path.join(out_dir, "validation_split.json"), record, indent=None)
    training = data_lib.Splits(splits.x_train[train], splits.y_train[train], splits.x_test,
                               splits.y_test, splits.info)
    return training, (splits.x_train[held], splits.y_train[held])


class NonFiniteLossError(RuntimeError):
    """Training produced a NaN or infinite loss."""


class WorkerLostError(RuntimeError):
    """A peer of a multi-worker run stopped; restart this worker (it resumes the run)."""


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops `fit` at the first non-finite loss, naming the epoch and the step.

    It raises instead of setting `stop_training`, so the epoch never ends normally and the
    backup of the last good epoch is not overwritten with broken weights.
    """

    def __init__(self, backup_dir: str):
        super().__init__()
        self.backup_dir = backup_dir
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLossError(
                f"The training loss became {float(loss)} at epoch {self._epoch + 1}, step "
                f"{batch + 1}; training stopped. " + (
                    f"The checkpoint of the last completed epoch is kept in {self.backup_dir}; "
                    "rerun with the same settings to resume from it, or check the data."
                    if restored_epoch(self.backup_dir) else
                    "No epoch was completed, so nothing was kept: lower --lr or check the "
                    "data, then rerun (the same --workdir accepts the new settings)."))


class LogLearningRate(keras.callbacks.Callback):
    """Adds the learning rate each epoch trained with to its logs (`learning_rate` in
    history.csv and TensorBoard), read at the epoch's first step."""

    def __init__(self):
        super().__init__()
        self._rate = None

    def on_epoch_begin(self, epoch, logs=None):
        self._rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._rate is not None:
            logs["learning_rate"] = self._rate


def recorded_config(path: str) -> dict[str, Any]:
    """The settings a run's config.json records, every `TrainConfig` field present: one added
    after the run was written reads as its default (the behaviour of the time), except
    `algorithm_version`, which reads as 1 (the algorithms before it was recorded).

    Raises:
        ValueError: naming the file, when it cannot be read as JSON.
    """
    try:
        with open(path) as f:
            old = json.load(f)
    except (OSError, ValueError) as err:
        raise ValueError(f"{path} is not a readable run configuration ({err}); move the "
                         "workdir aside or use a new --workdir.") from err
    defaults = json.loads(json.dumps(dataclasses.asdict(TrainConfig(workdir=""))))
    return {k: old.get(k, 1 if k == "algorithm_version" else v) for k, v in defaults.items()}


def _check_workdir(config: TrainConfig, path: str, backup_dir: str) -> None:
    """Refuses to resume a workdir that holds a run with other settings, or one trained for
    more epochs than asked. A workdir with no completed epoch binds nothing: a run that
    failed at once (a bad flag, bad data, a NaN in its first epoch) takes the corrected
    command."""
    done = restored_epoch(backup_dir)
    if not os.path.exists(path) or done == 0:
        return
    old = recorded_config(path)
    new = json.loads(json.dumps(dataclasses.asdict(config)))
    resumable = RESUMABLE_CHANGES
    if new.get("lr_schedule") == "cyclic":  # the triangle spans the run: its length is fixed
        resumable = tuple(k for k in resumable if k != "epochs")
    diff = sorted(k for k in new if k not in resumable and old.get(k) != new[k])
    if diff:
        details = ", ".join(f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in diff)
        why = (" It was trained before the baselines followed their authors' code (AT_PGD's "
               "last iterate, TRADES's three forwards, no normalisation by default: "
               "docs/methods.md); it cannot be resumed with this version, train it again."
               if "algorithm_version" in diff else "")
        raise ValueError(f"{config.workdir} holds a run with other settings ({details}); "
                         "use a new --workdir, or the same settings to resume it." + why)
    if done > config.epochs:
        raise ValueError(f"{config.workdir} holds a run already trained for {done} epochs; "
                         f"--epochs={config.epochs} is fewer (give --epochs={done} or more, or "
                         "a new --workdir).")


def with_norm_defaults(config: TrainConfig, threat: Ball) -> TrainConfig:
    """`config` with each method argument given as None that depends on the threat model
    (`norm_defaults`: a step size of 2/255 for L-infinity, epsilon / 4 for L2) set to its
    value, as config.json records it (adt-train's flags leave them None)."""
    params = dict(config.method_params)
    for name, value in get_method(config.method).norm_defaults(threat).items():
        if name in params and params[name] is None:
            params[name] = value
    return dataclasses.replace(config, method_params=params)


def build_trainer(config: TrainConfig, splits: data_lib.Splits, steps_per_epoch: int,
                  threat: Ball):
    """Classifier + method, compiled (call inside the strategy's scope)."""
    mean, std = data_lib.channel_stats(splits.x_train) if config.normalize else (None, None)
    classifier = build_model(config.model, splits.input_shape, splits.info.num_classes,
                             mean=mean, std=std, **config.model_params)
    trainer = get_method(config.method)(classifier, epsilon=threat, seed=config.seed,
                                        **config.method_params)
    trainer.compile(
        optimizer=make_optimizer(config.lr, momentum=config.momentum,
                                 weight_decay=config.weight_decay,
                                 weight_decay_form=config.weight_decay_form,
                                 decay_epochs=config.lr_decay_epochs,
                                 decay_factor=config.lr_decay_factor,
                                 steps_per_epoch=steps_per_epoch,
                                 schedule=config.lr_schedule, epochs=config.epochs,
                                 ema_decay=config.ema_decay),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=config.jit_compile,
    )
    trainer(tf.zeros((1,) + splits.input_shape))  # build, so a backup can be restored
    return trainer


def evaluate_report(classifier: keras.Model, splits: data_lib.Splits, threat: Ball,
                    config: TrainConfig) -> dict[str, Any]:
    """Clean and PGD-20 accuracy (step epsilon/4, random start) on the test split, with the
    classifier computing in float32 (a model trained under a mixed policy is attacked
    through its float32 copy, as `adt-evaluate` does by default)."""
    n = len(splits.x_test) if config.eval_examples is None else min(config.eval_examples,
                                                                    len(splits.x_test))
    x, y = splits.x_test[:n], splits.y_test[:n]
    # The evaluation's own PGD-20 (the `quick` suite), with the run's seed: the report's
    # number is what `adt-evaluate --suite=quick --seed=<seed>` gives on the same inputs.
    result = evaluate(classifier, x, y, threat, suite="quick",
                      seed=config.seed,
                      batch_size=config.eval_batch_size, sanity_checks=False,
                      verbose=int(bool(config.verbose)))
    return {
        "dataset": config.dataset, "split": "test", "num_examples": int(n),
        "epsilon": threat.epsilon, "norm": threat.norm,
        "clean_accuracy": result.clean_accuracy,
        "pgd20_accuracy": result.robust_accuracy, "compute_dtype": result.compute_dtype,
        "attack": ("PGD-20" if threat.norm == LinfBall.norm else f"PGD-20 ({threat.title})")
        + ", step epsilon/4, uniform random start, 1 restart, CE loss",
    }


def format_report(report: dict[str, Any]) -> str:
    if "clean_accuracy" not in report:  # a non-chief worker of a multi-worker run
        return (f"Worker {report['worker']} finished {report['method']}; the chief writes "
                f"the report. This worker's copy of the classifier: {report['classifier_path']}")
    budget = describe_budget(report.get("norm", LinfBall.norm), report["epsilon"])
    lines = [
        f"Report: {report['method']} on {report['dataset']} (test split, "
        f"{report['num_examples']} inputs, {budget})",
        f"  clean accuracy:  {100 * report['clean_accuracy']:.2f}%",
        f"  PGD-20 accuracy: {100 * report['pgd20_accuracy']:.2f}%  ({report['attack']}; "
        f"computed in {report.get('compute_dtype', 'float32')})",
        f"  classifier: {report['classifier_path']}",
    ]
    best = report.get("best")
    if best:
        lines += [
            f"  best checkpoint (epoch {best['epoch']} of {report['epochs']}: the highest "
            f"validation robust accuracy, {100 * best['val_robust_accuracy']:.2f}%): clean "
            f"{100 * best['clean_accuracy']:.2f}%, PGD-20 {100 * best['pgd20_accuracy']:.2f}%",
            f"  best classifier: {best['classifier_path']}",
        ]
    return "\n".join(lines)


def run_training(config: TrainConfig, monitors: tuple = ()) -> dict[str, Any]:
    """Trains, checkpoints every epoch (resuming a previous run in the same workdir), saves
    `<workdir>/classifier.keras`, evaluates and returns the report (also `report.json`).

    Under `strategy="multiworker"` every worker calls this with the same config (its role
    comes from TF_CONFIG): the workers train in lockstep on their shares of each batch;
    the chief writes config.json, the backup, the logs, classifier.keras and the report in
    the workdir (which must be on a file system all workers see), the other workers write
    their copies under <workdir>/workers/<task>-<id>/ and return a short report.

    `monitors`: extra Keras callbacks that add entries to each epoch's logs (a benchmark's
    per-epoch test accuracy, say); they run before the checkpointing and the loggers, and
    choose nothing.
    """
    config.validate()
    # First: MultiWorkerMirroredStrategy must configure collectives before TF starts.
    strategy = make_strategy(config.strategy, config.tpu)
    role = worker_role(strategy)
    # The threat model, made once for the run. An npz: source's default budget is in its
    # files: they are read for it here, once, and the run trains on what was read.
    splits = None
    if config.epsilon is None and config.dataset.startswith(data_lib.NPZ_PREFIX):
        splits = _load_splits(config)
    threat = config.threat(splits.info if splits is not None else None)
    config = with_norm_defaults(config, threat)
    # The method's constructor checks its arguments: run it on a throwaway model before
    # any (other) data is read.
    check_method_arguments(config.method, epsilon=threat, seed=config.seed,
                           **config.method_params)
    out_dir = role.write_dir(config.workdir)
    checks.check_writable_dir(out_dir, "--workdir")
    config_path = os.path.join(out_dir, "config.json")
    backup_dir = os.path.join(config.workdir, "backup")
    with workdir_lock(out_dir):
        _check_workdir(config, config_path, backup_dir)
        return _train(config, threat, role, strategy, out_dir, config_path, backup_dir,
                      monitors, splits)


def _load_splits(config: TrainConfig) -> data_lib.Splits:
    return data_lib.load(config.dataset, config.data_dir, config.max_train_examples)


def _train(config: TrainConfig, threat: Ball, role, strategy, out_dir: str, config_path: str,
           backup_dir: str, monitors: tuple = (),
           splits: data_lib.Splits | None = None) -> dict[str, Any]:
    """The run itself, in a workdir this process holds the lock of (`splits`: the data if
    `run_training` has read it already)."""
    keras.utils.set_random_seed(config.seed)  # the same on every worker: same init, order
    if splits is None:
        splits = _load_splits(config)
    held_out = None
    if config.validation_examples:  # never trained on, nor in the normalisation statistics
        splits, held_out = hold_out_validation(config, splits, out_dir)
    steps_per_epoch = math.ceil(len(splits.x_train) / config.batch_size)
    with precision_policy(config.mixed_precision, strategy), strategy.scope():
        trainer = build_trainer(config, splits, steps_per_epoch, threat)
    # Written once the data and the model are known to be good, atomically.
    files.write_json(config_path, dataclasses.asdict(config))
    _announce_resume(backup_dir, config)
    backup = SharedBackupAndRestore(backup_dir, os.path.join(out_dir, "backup"),
                                    save_freq="epoch", delete_checkpoint=False,
                                    double_checkpoint=True)
    # Restored here, before the data stream is made, so that the stream starts at the epoch
    # the backup holds (after Keras's fallback to the previous checkpoint, if the last one
    # is unreadable): a resumed run sees the batches an uninterrupted one sees. `fit`
    # restores the same files again.
    backup.set_model(trainer)
    with precision_policy(config.mixed_precision, strategy), strategy.scope():
        backup.on_train_begin()  # may build the optimizer's variables
    first_epoch = min(restored_epoch(backup_dir), config.epochs)
    train_ds = data_lib.make_dataset(
        splits.x_train, splits.y_train, config.batch_size, training=True,
        augment=splits.info.augment, seed=config.seed, first_epoch=first_epoch,
        num_epochs=max(config.epochs - first_epoch, 1))
    # Keras's per-epoch val_loss / val_accuracy: on the held-out split when there is one (the
    # test split is then not touched until the final report), else on the test split.
    watched = held_out or (splits.x_test, splits.y_test)
    test_ds = data_lib.make_dataset(*watched, config.eval_batch_size, training=False)
    if role.num_workers > 1:
        train_ds, test_ds = shard_by_data(train_ds), shard_by_data(test_ds)
    selection = []
    if held_out is not None:
        selection = [RobustAccuracyCallback(
            *held_out, threat,
            steps=validation_pgd_steps(config.validation_attack),
            batch_size=config.eval_batch_size, seed=config.seed,
            every=config.validation_every)]
        if role.is_chief:
            selection.append(BestCheckpoint(out_dir))
    callbacks = [
        LogLearningRate(),
        StopOnNonFiniteLoss(backup_dir),
        *monitors,
        *selection,  # before the backup: a kill while best.keras is written redoes the epoch
        backup,
        keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"), write_graph=False),
        keras.callbacks.CSVLogger(os.path.join(out_dir, "history.csv"), append=True),
    ]
    try:
        trainer.fit(train_ds, epochs=config.epochs, steps_per_epoch=steps_per_epoch,
                    validation_data=test_ds, callbacks=callbacks,
                    verbose=config.verbose if role.is_chief else 0,
                    shuffle=False)  # the pipeline shuffles
    except (tf.errors.UnavailableError, tf.errors.AbortedError,
            tf.errors.DeadlineExceededError) as err:
        if role.num_workers < 2:
            raise
        first_line = (err.message or str(err)).strip().splitlines()[0]
        raise WorkerLostError(
            f"{role.name}: a peer worker of the run stopped ({type(err).__name__}: "
            f"{first_line}). Restart every stopped worker with the same command: the run "
            f"resumes from the last completed epoch in {backup_dir}.") from err

    classifier = trainer.classifier
    path = os.path.join(out_dir, "classifier.keras")
    tmp = os.path.join(out_dir, "classifier.tmp.keras")
    classifier.save(tmp)
    os.replace(tmp, path)  # a reader never sees a half-written model
    if isinstance(trainer, AmortizedAdversarialTrainer):  # reusable as attacks
        for name, network in trainer.adversary_networks().items():
            network.save(os.path.join(out_dir, f"{name}.keras"))
    if not role.is_chief:
        return {"method": config.method, "worker": role.name, "classifier_path": path,
                "epochs": config.epochs, "seed": config.seed}

    report = evaluate_report(classifier, splits, threat, config)
    report.update({"method": config.method, "classifier_path": path,
                   "epochs": config.epochs, "seed": config.seed})
    best = read_best(out_dir) if held_out is not None else None
    if best is not None:
        best_model = keras.saving.load_model(os.path.join(out_dir, BEST_FILE), compile=False)
        best_report = evaluate_report(best_model, splits, threat, config)
        report["best"] = dict(best, classifier_path=os.path.join(out_dir, BEST_FILE),
                              clean_accuracy=best_report["clean_accuracy"],
                              pgd20_accuracy=best_report["pgd20_accuracy"])
    files.write_json(os.path.join(out_dir, "report.json"), report)
    return report


@contextlib.contextmanager
def workdir_lock(workdir: str):
    """Holds `<workdir>/.lock` (an exclusive `flock`) for the run: a second run into the same
    workdir is refused. The kernel drops the lock when the process ends, however it ends, so
    a killed run never leaves it stuck and the rerun resumes."""
    path = os.path.join(workdir, ".lock")
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise ValueError(f"--workdir={workdir} is in use by another adt-train run ({owner}); "
                         "wait for it to finish, or use another --workdir.") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        handle.flush()
        yield
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _announce_resume(backup_dir: str, config: TrainConfig) -> None:
    if config.verbose and os.path.exists(os.path.join(backup_dir, "training_metadata.json")):
        print(f"Resuming {config.workdir}: {restored_epoch(backup_dir)} of {config.epochs} "
              "epochs already done.")


__all__ = ["NonFiniteLossError", "TrainConfig", "WorkerLostError", "build_trainer",
           "recorded_config", "with_norm_defaults",
           "format_report", "run_training", "workdir_lock"]
