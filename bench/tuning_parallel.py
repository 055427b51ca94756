"""Wall time of a distributed lambda search against one process.

Runs the same 4-point grid (ADT_EXP on the bundled CIFAR-10 sample) twice with `adt-tune`:
in one process, then as a chief and `--workers` workers on 127.0.0.1; checks that both score
every lambda the same, and writes bench/results/tuning_parallel_cpu.md with the wall times
(process start-up included: that is what a user waits for).

    python -m bench.tuning_parallel            # about 10 min on a quiet 2-core machine
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from adt_tf.core.files import write_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FLAGS = flags.FLAGS
flags.DEFINE_integer("workers", 2, "Worker processes of the distributed run.")
flags.DEFINE_integer("epochs", 2, "Epochs per trial.")
flags.DEFINE_integer("train_examples", 1000, "Training images of the sample used (minus the "
                     "validation split).")
flags.DEFINE_string("output_dir", os.path.join(ROOT, "bench", "results"), "Table folder.")
flags.DEFINE_integer("worker_threads", 1, "TensorFlow intra-op threads of each worker (0: "
                     "its default); the single process keeps the default (all cores).")

LAMBDAS = "0,0.01,0.1,1"


def _args(directory: str) -> list[str]:
    return ["--method=adt_exp", "--dataset=cifar10_sample", "--tuner=grid",
            f"--lambda_values={LAMBDAS}", "--max_trials=4", f"--epochs={FLAGS.epochs}",
            f"--max_train_examples={FLAGS.train_examples}", "--val_examples=200",
            "--val_pgd_steps=5", "--model_width=16", "--batch_size=64", "--verbose=0",
            f"--directory={directory}", "--project_name=grid"]


def _run(commands: list[list[str]], logs: str) -> float:
    env = {k: v for k, v in os.environ.items() if not k.startswith("KERASTUNER_")}
    env.update(PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    t0 = time.perf_counter()
    procs = []
    for i, extra in enumerate(commands):
        log = open(os.path.join(logs, f"process{i}.log"), "w")
        procs.append(subprocess.Popen([sys.executable, "-m", "trainers.tune_lambda", *extra],
                                      cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT))
    for i, proc in enumerate(procs):
        if proc.wait() != 0:
            raise RuntimeError(f"process {i} exited {proc.returncode}; see {logs}")
    return time.perf_counter() - t0


def _scores(directory: str) -> dict[float, float]:
    with open(os.path.join(directory, "grid", "trials.json")) as f:
        return {r["entropy_weight"]: r["val_robust_accuracy"] for r in json.load(f)}


def main(argv):
    del argv
    work = tempfile.mkdtemp(prefix="tuning_parallel_")
    try:
        single_dir, dist_dir = os.path.join(work, "single"), os.path.join(work, "dist")
        os.makedirs(os.path.join(work, "logs_single"))
        os.makedirs(os.path.join(work, "logs_dist"))
        single = _run([_args(single_dir)], os.path.join(work, "logs_single"))
        print(f"one process: {single:.1f} s", flush=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        address = f"--oracle_address=127.0.0.1:{port}"
        commands = [_args(dist_dir) + ["--tuning_role=chief", address]] + [
            _args(dist_dir) + ["--tuning_role=worker", address, f"--tuner_id=worker-{i}",
                               f"--intra_op_threads={FLAGS.worker_threads}"]
            for i in range(FLAGS.workers)]
        dist = _run(commands, os.path.join(work, "logs_dist"))
        print(f"chief + {FLAGS.workers} workers: {dist:.1f} s", flush=True)
        same = _scores(single_dir) == _scores(dist_dir)
        with open(os.path.join(dist_dir, "grid", "workers", "worker-0.json")) as f:
            first = len(json.load(f))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    path = os.path.join(FLAGS.output_dir, "tuning_parallel_cpu.md")
    lines = [
        "# A 4-trial lambda grid: one process against a chief and workers, CPU",
        "",
        f"- Search: adt-tune, ADT_EXP, grid over lambda in {{{LAMBDAS}}}, {FLAGS.epochs} "
        f"epoch(s) per trial on the first {FLAGS.train_examples} images of the bundled "
        "CIFAR-10 sample (200 held out for the validation PGD-5), SmallCNN width 16, batch 64.",
        f"- Machine: {os.cpu_count()} cores; the single process with TensorFlow's default "
        "threads, each worker with "
        + (f"{FLAGS.worker_threads} intra-op thread(s)" if FLAGS.worker_threads else
           "the default threads")
        + "; wall time from launch to the last process's exit (start-up included; the chief "
        "polls for the end of the search every 20 s, keras-tuner's).",
        "",
        "| run | processes | wall time (s) | speed-up |",
        "|---|---:|---:|---:|",
        f"| one process | 1 | {single:.1f} | 1.00 |",
        f"| chief + {FLAGS.workers} workers | {FLAGS.workers + 1} | {dist:.1f} | "
        f"{single / dist:.2f} |",
        "",
        f"Every lambda scored the same in both runs: {'yes' if same else '**no**'}. "
        f"worker-0 trained {first} of the 4 trials.",
        "",
        f"Command: `python -m bench.tuning_parallel {' '.join(sys.argv[1:])}`".rstrip() + "",
        "",
    ]
    write_text(path, "\n".join(lines))
    print(f"Wrote {path}")


if __name__ == "__main__":
    app.run(main)
