"""Distribution strategies by name, the worker's role, and where each worker writes (the
backup every worker restores is `adt_tf.training.callbacks.backup`).

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
import os

import tensorflow as tf

from adt_tf.core import checks

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


__all__ = ["STRATEGIES", "WorkerRole", "make_strategy", "shard_by_data", "worker_role"]
