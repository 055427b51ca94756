"""One training run, from its resolved record: data, model, method, fit, save, report.

`run_training(config)` resolves a `RunConfig` once (`adt_tf.training.record.resolve`),
refuses a workdir that holds another run (`record.differences`), writes the record, trains
(resuming the epochs a previous process completed), saves `<workdir>/classifier.keras`,
evaluates and returns the report. The command line `adt-train` builds the config from its
flags; benchmarks and the tuner build theirs from the same schema.
"""

from __future__ import annotations

import math
import os
from typing import Any

import keras
import tensorflow as tf

from adt_tf import data as data_lib
from adt_tf.core import checks, files
from adt_tf.core.precision import precision_policy
from adt_tf.methods import AmortizedAdversarialTrainer, get_method
from adt_tf.models import build_model
from adt_tf.numerics.optimizers import make_optimizer
from adt_tf.threat import Ball
from adt_tf.training.callbacks import (
    BestCheckpoint,
    HistoryCSV,
    LogLearningRate,
    RobustAccuracyCallback,
    SharedBackupAndRestore,
    StopOnNonFiniteLoss,
    TestSplitMetrics,
    read_best,
    restored_epoch,
)
from adt_tf.training.config import RunConfig, validation_pgd_steps
from adt_tf.training.record import (
    RunRecord,
    describe_differences,
    differences,
    read_record,
    record_path,
    write_record,
)
from adt_tf.training.report import evaluate_report
from adt_tf.training.resolve import resolve, resolve_recorded
from adt_tf.training.strategies import make_strategy, shard_by_data, worker_role
from adt_tf.training.workdir import (
    BACKUP_DIR,
    BEST_FILE,
    CLASSIFIER_FILE,
    HISTORY_FILE,
    LOGS_DIR,
    REPORT_FILE,
    workdir_lock,
)


class WorkerLostError(RuntimeError):
    """A peer of a multi-worker run stopped; restart this worker (it resumes the run)."""


def hold_out_validation(record: RunRecord, splits: data_lib.Splits):
    """The run's training part and its validation split (the record's
    `validation_indices` of the loaded training images). Returns (training Splits,
    (x_val, y_val)); the test arrays are kept for the final report, never used to choose
    anything."""
    import numpy as np

    held = np.asarray(record.validation_indices, dtype=np.int64)
    keep = np.setdiff1d(np.arange(len(splits.x_train)), held)
    training = data_lib.Splits(splits.x_train[keep], splits.y_train[keep], splits.x_test,
                               splits.y_test, splits.info)
    return training, (splits.x_train[held], splits.y_train[held])


def build_trainer(config: RunConfig, splits: data_lib.Splits, steps_per_epoch: int,
                  threat: Ball):
    """Classifier + method of a resolved config, compiled (call inside the strategy's
    scope)."""
    mean, std = (data_lib.channel_stats(splits.x_train) if config.data.normalize
                 else (None, None))
    try:
        classifier = build_model(config.model.name, splits.input_shape,
                                 splits.info.num_classes, mean=mean, std=std,
                                 **config.model.params)
    except ValueError as err:  # the builder's own checks: name the setting
        raise ValueError(f"--model={config.model.name} --model_params: {err}") from None
    trainer = get_method(config.method.name)(classifier, epsilon=threat, seed=config.run.seed,
                                             **config.method.params)
    optim = config.optim
    trainer.compile(
        optimizer=make_optimizer(optim.lr, momentum=optim.momentum,
                                 weight_decay=optim.weight_decay,
                                 weight_decay_form=optim.weight_decay_form,
                                 decay_epochs=optim.lr_decay_epochs,
                                 decay_factor=optim.lr_decay_factor,
                                 steps_per_epoch=steps_per_epoch,
                                 schedule=optim.lr_schedule, epochs=optim.epochs,
                                 ema_decay=config.validation.ema_decay,
                                 ema_warmup=bool(config.validation.ema_warmup)),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")],
        jit_compile=config.compute.jit_compile,
    )
    trainer(tf.zeros((1,) + splits.input_shape))  # build, so a backup can be restored
    return trainer


def run_training(config: RunConfig, monitors: tuple = ()) -> dict[str, Any]:
    """Trains, checkpoints every epoch (resuming a previous run in the same workdir), saves
    `<workdir>/classifier.keras`, evaluates and returns the report (also `report.json`).

    The config is resolved once (`record.resolve`) and the record written to
    `<workdir>/config.json`; a workdir whose record describes another run
    (`record.differences`) is refused before anything is written.

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
    strategy = make_strategy(config.compute.strategy, config.compute.tpu)
    role = worker_role(strategy)
    splits = data_lib.load(config.data.dataset, config.data.data_dir,
                           config.data.max_train_examples)
    record = resolve(config, splits, strategy=strategy)
    config = record.config
    keras.utils.set_random_seed(config.run.seed)  # the same on every worker: same init, order
    loaded, held_out = splits, None
    if record.validation_indices:  # never trained on, nor in the normalisation statistics
        splits, held_out = hold_out_validation(record, splits)
    steps_per_epoch = math.ceil(len(splits.x_train) / config.optim.batch_size)
    # Built before the workdir is touched: a model or method argument its builder refuses
    # fails with nothing written.
    with precision_policy(config.compute.mixed_precision, strategy), strategy.scope():
        trainer = build_trainer(config, splits, steps_per_epoch, record.threat)
    out_dir = role.write_dir(config.run.workdir)
    checks.check_writable_dir(out_dir, "--workdir")
    backup_dir = os.path.join(config.run.workdir, BACKUP_DIR)
    with workdir_lock(out_dir):
        check_same_run(record, record_path(out_dir), backup_dir, loaded)
        return _train(record, trainer, role, strategy, out_dir, backup_dir, monitors, splits,
                      held_out, steps_per_epoch)


def check_same_run(record: RunRecord, path: str, backup_dir: str,
                   splits: data_lib.Splits | None = None) -> None:
    """Refuses to resume a workdir whose record describes another run (the settings that
    differ are named), or one trained for more epochs than asked. A workdir with no
    completed epoch binds nothing: a run that failed at once (a bad flag, bad data, a NaN in
    its first epoch) takes the corrected command."""
    done = restored_epoch(backup_dir)
    if not os.path.exists(path) or done == 0:
        return
    old = resolve_recorded(read_record(path), splits)
    diff = differences(old, record)
    workdir = record.config.run.workdir
    if diff:
        why = (" It was trained with an earlier version of its algorithms (docs/methods.md: "
               "the baselines as their authors ran them); it cannot be resumed with this "
               "version, train it again."
               if any(path == "algorithm_version" for path, _, _ in diff) else "")
        raise ValueError(f"{workdir} holds a run with other settings "
                         f"({describe_differences(diff)}); use a new --workdir, or the same "
                         "settings to resume it." + why)
    if done > record.config.optim.epochs:
        raise ValueError(f"{workdir} holds a run already trained for {done} epochs; "
                         f"--epochs={record.config.optim.epochs} is fewer (give "
                         f"--epochs={done} or more, or a new --workdir).")


def _train(record: RunRecord, trainer, role, strategy, out_dir: str, backup_dir: str,
           monitors: tuple, splits: data_lib.Splits, held_out, steps_per_epoch: int
           ) -> dict[str, Any]:
    """The run itself, in a workdir this process holds the lock of (`splits`: the training
    part, `held_out`: the validation split or None)."""
    config = record.config
    threat = record.threat
    # Written once the data and the model are known to be good, atomically.
    write_record(record, out_dir)
    _announce_resume(backup_dir, config)
    backup = SharedBackupAndRestore(backup_dir, os.path.join(out_dir, BACKUP_DIR),
                                    save_freq="epoch", delete_checkpoint=False)
    # Restored here, before the data stream is made, so that the stream starts at the epoch
    # the backup holds (after Keras's fallback to the previous checkpoint, if the last one
    # is unreadable): a resumed run sees the batches an uninterrupted one sees. `fit`
    # restores the same files again.
    backup.set_model(trainer)
    with precision_policy(config.compute.mixed_precision, strategy), strategy.scope():
        backup.on_train_begin()  # may build the optimizer's variables
    epochs = config.optim.epochs
    first_epoch = min(restored_epoch(backup_dir), epochs)
    train_ds = data_lib.make_dataset(
        splits.x_train, splits.y_train, config.optim.batch_size, training=True,
        augment=splits.info.augment, seed=config.run.seed, first_epoch=first_epoch,
        num_epochs=max(epochs - first_epoch, 1))
    # Keras's per-epoch val_loss / val_accuracy on the held-out split when there is one
    # (the test split is then not touched until the final report); without one, the test
    # split's clean numbers are logged under their own name (test_loss, test_accuracy).
    batch = config.report.eval_batch_size
    watched = (data_lib.make_dataset(*held_out, batch, training=False) if held_out
               else data_lib.make_dataset(splits.x_test, splits.y_test, batch, training=False))
    if role.num_workers > 1:
        train_ds, watched = shard_by_data(train_ds), shard_by_data(watched)
    selection = []
    if held_out is not None:
        selection = [RobustAccuracyCallback(
            *held_out, threat, steps=validation_pgd_steps(config.validation.attack),
            batch_size=batch, seed=config.run.seed, every=config.validation.every)]
        if role.is_chief:
            selection.append(BestCheckpoint(out_dir))
    callbacks = [
        LogLearningRate(),
        StopOnNonFiniteLoss(backup_dir),
        *([] if held_out else [TestSplitMetrics(watched)]),
        *trainer.training_callbacks(),
        *monitors,
        *selection,  # before the backup: a kill while best.keras is written redoes the epoch
        backup,
        keras.callbacks.TensorBoard(os.path.join(out_dir, LOGS_DIR), write_graph=False),
        HistoryCSV(os.path.join(out_dir, HISTORY_FILE), append=True),
    ]
    try:
        trainer.fit(train_ds, epochs=epochs, steps_per_epoch=steps_per_epoch,
                    validation_data=watched if held_out else None, callbacks=callbacks,
                    verbose=config.run.verbose if role.is_chief else 0,
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
    path = os.path.join(out_dir, CLASSIFIER_FILE)
    tmp = os.path.join(out_dir, "classifier.tmp.keras")
    classifier.save(tmp)
    os.replace(tmp, path)  # a reader never sees a half-written model
    if isinstance(trainer, AmortizedAdversarialTrainer):  # reusable as attacks
        for name, network in trainer.adversary_networks().items():
            network.save(os.path.join(out_dir, f"{name}.keras"))
    summary = {"method": config.method.name, "classifier_path": path, "epochs": epochs,
               "seed": config.run.seed}
    if not role.is_chief:
        return {**summary, "worker": role.name}

    report = {**evaluate_report(classifier, splits, threat, config), **summary}
    best = read_best(out_dir) if held_out is not None else None
    if best is not None:
        best_model = keras.saving.load_model(os.path.join(out_dir, BEST_FILE), compile=False)
        best_report = evaluate_report(best_model, splits, threat, config)
        report["best"] = dict(best, classifier_path=os.path.join(out_dir, BEST_FILE),
                              clean_accuracy=best_report["clean_accuracy"],
                              pgd20_accuracy=best_report["pgd20_accuracy"])
    files.write_json(os.path.join(out_dir, REPORT_FILE), report)
    return report


def apply_threads(compute) -> None:
    """The thread settings of a run's `compute` section (and deterministic kernels), set
    before TensorFlow starts its thread pools (its first op): call it first thing in a
    fresh process."""
    if compute.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(compute.intra_op_threads)
    if compute.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(compute.inter_op_threads)
    if compute.deterministic_ops:
        tf.config.experimental.enable_op_determinism()


def _announce_resume(backup_dir: str, config: RunConfig) -> None:
    if config.run.verbose and os.path.exists(os.path.join(backup_dir, "training_metadata.json")):
        print(f"Resuming {config.run.workdir}: {restored_epoch(backup_dir)} of "
              f"{config.optim.epochs} epochs already done.")


__all__ = ["WorkerLostError", "apply_threads", "build_trainer", "check_same_run",
           "hold_out_validation", "run_training"]
