"""Distribution strategies by name, the worker's role, and where each worker writes.

One training run works on one CPU or GPU (`default`), on every GPU of a machine
(`mirrored`), on several machines (`multiworker`, configured by the `TF_CONFIG` environment
variable that TensorFlow's cluster resolver reads) or on a TPU (`tpu`). In a multi-worker
run every worker trains in lockstep; only the chief writes the run's files, the other
workers write theirs under `<workdir>/workers/<task>-<id>/` (Keras's recommendation: every
worker saves, so that the collective reads behind a save stay in step, but only the chief's
copy is the run's), and every worker restores the chief's backup on restart.

Reference: TensorFlow's "Multi-worker training with Keras" guide (fault tolerance with
`BackupAndRestore`, chief-only checkpoints).
"""

from __future__ import annotations

import dataclasses
import json
import os

import keras
import tensorflow as tf

from adt_tf import checks

STRATEGIES = ("default", "mirrored", "multiworker", "tpu")
WORKERS_DIR = "workers"


def make_strategy(name: str, tpu: str | None = None) -> tf.distribute.Strategy:
    """The distribution strategy registered under `name`.

    Create it before any other TensorFlow work in the process: `MultiWorkerMirroredStrategy`
    must configure the collective ops before the runtime starts.

    Args:
        name: "default" (the current strategy: one device), "mirrored" (every local GPU, or
            the CPU), "multiworker" (every worker listed in `TF_CONFIG`) or "tpu".
        tpu: the TPU's name or grpc:// address for "tpu" (None: TensorFlow's own discovery,
            e.g. the local TPU of a TPU VM).

    Returns:
        A `tf.distribute.Strategy`.

    Raises:
        ValueError: unknown name, "multiworker" without a TF_CONFIG cluster, "tpu" without
            a reachable TPU.

    Example:
        >>> strategy = make_strategy("multiworker")   # TF_CONFIG set on every worker
        >>> role = worker_role(strategy)
        >>> with strategy.scope():
        ...     trainer = ADTExp(build_model("wrn_28_10", (32, 32, 3), 10))
        ...     trainer.compile(...)
        >>> trainer.fit(shard_by_data(train_ds), callbacks=[SharedBackupAndRestore(
        ...     "/shared/run/backup", role.write_dir("/shared/run") + "/backup")])
    """
    checks.check_choice(name, "strategy", STRATEGIES)
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        resolver = tf.distribute.cluster_resolver.TFConfigClusterResolver()
        if not resolver.cluster_spec().as_dict():
            raise ValueError(
                "strategy 'multiworker' needs the TF_CONFIG environment variable, got "
                f"TF_CONFIG={os.environ.get('TF_CONFIG')!r}; expected e.g. "
                '{"cluster": {"worker": ["host1:port", "host2:port"]}, '
                '"task": {"type": "worker", "index": 0}}.')
        if resolver.task_type not in ("chief", "worker"):
            raise ValueError(f"TF_CONFIG task type must be 'chief' or 'worker', got "
                             f"{resolver.task_type!r}.")
        return tf.distribute.MultiWorkerMirroredStrategy(cluster_resolver=resolver)
    try:
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu)
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
    except (ValueError, RuntimeError, tf.errors.OpError) as err:
        raise ValueError(f"strategy 'tpu' found no TPU (tpu={tpu!r}): {err}") from err
    return tf.distribute.TPUStrategy(resolver)


@dataclasses.dataclass(frozen=True)
class WorkerRole:
    """Who this process is in a (possibly multi-worker) run.

    Attributes:
        task_type: "chief" or "worker" in a multi-worker run, None otherwise.
        task_id: the index of this task within its type (0 outside multi-worker runs).
        num_workers: number of processes training in lockstep.
    """

    task_type: str | None = None
    task_id: int = 0
    num_workers: int = 1
    has_chief_task: bool = False

    @property
    def is_chief(self) -> bool:
        """The chief writes the run's files: the "chief" task, else worker 0."""
        if self.task_type is None or self.task_type == "chief":
            return True
        return not self.has_chief_task and self.task_type == "worker" and self.task_id == 0

    @property
    def name(self) -> str:
        return "single" if self.task_type is None else f"{self.task_type}-{self.task_id}"

    def write_dir(self, workdir: str) -> str:
        """Where this process writes: the workdir for the chief, a folder of its own else."""
        if self.is_chief:
            return workdir
        return os.path.join(workdir, WORKERS_DIR, self.name)


def worker_role(strategy: tf.distribute.Strategy) -> WorkerRole:
    """The role of this process in `strategy` (single-process strategies: the chief)."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or resolver is None:
        return WorkerRole()
    jobs = resolver.cluster_spec().as_dict()
    if not jobs:
        return WorkerRole()
    workers = sum(len(jobs.get(job, [])) for job in ("chief", "worker"))
    return WorkerRole(task_type=resolver.task_type, task_id=int(resolver.task_id or 0),
                      num_workers=workers, has_chief_task="chief" in jobs)


def shard_by_data(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """Asks tf.distribute to shard `dataset` across workers by element (batch), not by file.

    In-memory datasets have no files to split; with DATA sharding every worker runs the
    same seeded pipeline and keeps its own share of each global batch, so the workers
    together see exactly the batches one worker would.
    """
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = (
        tf.data.experimental.AutoShardPolicy.DATA)
    return dataset.with_options(options)


class AtomicBackupAndRestore(keras.callbacks.BackupAndRestore):
    """Keras's `BackupAndRestore`, with a backup that a kill at any moment leaves whole.

    Keras writes `latest.weights.h5` in place and then `training_metadata.json`: a kill
    while the weights are written leaves a torn file (and, in the first epoch, no earlier
    copy to fall back to: every rerun fails), and a kill between the two files leaves the
    next epoch's weights with the last epoch's count (the rerun trains that epoch twice).
    Here each backup is one weights file per epoch, written under a temporary name and
    renamed into place (`adt_tf.files.atomic_path`), and the metadata, written atomically
    after it, names the weights file it goes with; the previous weights file is removed
    only then. Whatever moment a kill hits, the metadata names a complete weights file of
    the epoch it counts (or there is no metadata, and the run starts afresh). A backup of
    Keras's own layout (`latest.weights.h5`) is still restored.
    """

    def _metadata(self) -> dict:
        if not os.path.exists(self._training_metadata_path):
            return {}
        with open(self._training_metadata_path) as f:
            return json.load(f)

    def _save_model(self):
        from adt_tf import files

        os.makedirs(self.backup_dir, exist_ok=True)
        previous = self._metadata().get("weights")
        name = f"epoch{self._current_epoch}-batch{self._last_batch_seen}.weights.h5"
        with files.atomic_path(os.path.join(self.backup_dir, name)) as tmp:
            self.model.save_weights(tmp, overwrite=True)
        files.write_json(self._training_metadata_path,
                         {"epoch": self._current_epoch, "batch": self._last_batch_seen,
                          "weights": name})
        for stale in (previous, os.path.basename(self._weights_path)):
            if stale and stale != name:
                path = os.path.join(self.backup_dir, stale)
                if os.path.exists(path):
                    os.remove(path)

    def _load_model(self):
        from adt_tf import files

        files.remove_leftovers(self.backup_dir)
        metadata = self._metadata()
        if "weights" not in metadata:  # nothing yet, or Keras's own layout
            return super()._load_model()
        if not self.model.built:
            raise ValueError("BackupAndRestore needs a built model; call it on a batch first.")
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)
        self.model.load_weights(os.path.join(self.backup_dir, metadata["weights"]))
        self.model._initial_epoch = metadata["epoch"]

    def on_train_begin(self, logs=None):
        self._load_model()


class SharedBackupAndRestore(keras.callbacks.Callback):
    """Keras `BackupAndRestore` for multi-worker runs: one backup, written by the chief.

    Every worker restores from `backup_dir` (which must therefore be on a file system all
    workers see, e.g. NFS or a gs:// bucket); each saves at the end of each epoch to
    `write_dir`, which is `backup_dir` for the chief and a folder of its own for the other
    workers. After restoring, the workers check that they resume the same epoch (a worker
    that cannot see the chief's backup would otherwise desynchronise the collectives).

    A killed worker, restarted, resumes the epoch after the last one completed; under
    `MultiWorkerMirroredStrategy` the surviving workers fail once they notice the lost peer
    (an `UnavailableError`) and are restarted the same way.

    Args:
        backup_dir: the shared backup folder (read by all, written by the chief).
        write_dir: where this worker saves.
        **kwargs: passed to `keras.callbacks.BackupAndRestore` (save_freq, double_checkpoint,
            delete_checkpoint).
    """

    def __init__(self, backup_dir: str, write_dir: str | None = None, **kwargs):
        super().__init__()
        self.backup_dir = backup_dir
        self.write_dir = write_dir or backup_dir
        self._reader = AtomicBackupAndRestore(backup_dir, **kwargs)
        self._writer = (self._reader if self.write_dir == backup_dir else
                        AtomicBackupAndRestore(self.write_dir, **kwargs))

    def set_model(self, model):
        super().set_model(model)
        self._reader.set_model(model)
        self._writer.set_model(model)

    def on_train_begin(self, logs=None):
        self._reader.on_train_begin(logs)
        self._check_same_epoch(restored_epoch(self.backup_dir))

    def on_epoch_end(self, epoch, logs=None):
        self._writer.on_epoch_end(epoch, logs)

    def on_train_batch_end(self, batch, logs=None):
        self._writer.on_train_batch_end(batch, logs)

    def on_train_end(self, logs=None):
        self._writer.on_train_end(logs)

    def _check_same_epoch(self, epoch: int) -> None:
        strategy = self.model.distribute_strategy
        if worker_role(strategy).num_workers < 2:
            return
        # Only SUM and MEAN exist: the epochs agree iff n * sum(e^2) == sum(e)^2.
        local = strategy.run(lambda: tf.constant([1, epoch, epoch * epoch], tf.int64))
        n, total, squares = (int(v) for v in strategy.reduce("SUM", local, axis=None).numpy())
        if n * squares != total * total:
            raise ValueError(
                f"workers resumed from different epochs (this one: {epoch}); every worker "
                f"must see the chief's backup in {self.backup_dir} (put the workdir on a file "
                "system shared by all workers).")


def restored_epoch(backup_dir: str) -> int:
    """Number of completed epochs recorded in a `BackupAndRestore` folder (0 if none)."""
    path = os.path.join(backup_dir, "training_metadata.json")
    if not tf.io.gfile.exists(path):
        return 0
    with tf.io.gfile.GFile(path) as f:
        return int(json.load(f).get("epoch", 0))


__all__ = ["STRATEGIES", "AtomicBackupAndRestore", "SharedBackupAndRestore", "WorkerRole",
           "make_strategy", "restored_epoch", "shard_by_data", "worker_role"]
