"""Speed benchmark: training images/s, floor ratio and memory peak of every training method.

(About 470 lines: the measurement, its memory probes and its table belong together;
`bench.profile` reuses its compiled step.)

    python -m bench.speed                                   # all methods, both models, 64 & 128
    python -m bench.speed --methods=adt_exp --models=small_cnn --batch_sizes=64 --steps=9

For each model (SmallCNN at the MNIST shape 28x28x1, and a CIFAR model at 32x32x3: WRN-28-10
on GPU, a width-16 PreAct ResNet-18 on CPU), each batch size and each method of
`adt_tf.methods.METHODS` (default hyperparameters: ADT_EXP with T = 7, k = 5), it measures

- the time of one training step (the method's compiled `train_function`, the median of
  `--steps` timed steps after `--warmup` untimed ones), and images/s = batch / that time;
- the floor ratio = step time / (passes x plain step time), where `passes` is what the
  method declares (`forward_backward_passes()`, T*k + 1 = 36 for ADT_EXP) and the plain step
  is one forward+backward training step of standard training on the same batch, measured in
  the same run, interleaved with the method's steps (three plain steps before each) so that
  both see the same machine load;
  the same ratio from process CPU time is given too (less sensitive to other processes);
- the measured floor: the passes the method cannot avoid (`floor_passes()`: for ADT_EXP T
  input-gradient passes on the k*B batch and one training step; for AT_PGD K input-gradient
  passes and one step; ...) timed on their own, each once beside every timed step of the
  method, and step / floor: near 1, the method's own work (sampling, entropy, its Adam,
  projection, bookkeeping) costs nothing;
- the memory peak: on GPU the allocator's peak during one step (`get_memory_info`, reset
  before the step); on CPU the peak resident set size (VmHWM, or `resource.getrusage`) of a
  fresh process that builds the model and the method and runs two steps (TensorFlow's CPU
  allocator keeps what earlier steps and methods used, so one process cannot attribute its
  memory to one method): the TensorFlow runtime and the model are included, the standard
  training row is the reference.

Writes bench/results/speed_<machine>.md (a Markdown table, with the load average of the
machine before and after, since other processes make every timing slower).
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import resource
import statistics
import subprocess
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags

from adt_tf.core.files import write_text
from adt_tf.evaluation.suites import parse_overrides
from adt_tf.methods import METHODS, StandardTraining
from adt_tf.models import build_model
from bench.kit.variants import VARIANTS, Variant

FLAGS = flags.FLAGS
flags.DEFINE_list("methods", None, "Methods to time: registered methods or variants of "
                  "bench.kit.variants, e.g. adt_exp_lowrank (default: every registered method).")
flags.DEFINE_list("models", ["small_cnn", "cifar"], "Model presets: small_cnn (28x28x1), "
                  "cifar (32x32x3; WRN-28-10 on GPU, a width-16 PreAct ResNet-18 on CPU), "
                  "cpu_recipe (the CPU robustness recipe's SmallCNN, width 16 with "
                  "BatchNorm, 32x32x3).")
flags.DEFINE_list("batch_sizes", ["64", "128"], "Batch sizes.")
flags.DEFINE_integer("warmup", 2, "Untimed steps first (tracing, compilation, caches).")
flags.DEFINE_integer("steps", 5, "Timed steps (the median is reported).")
flags.DEFINE_bool("jit_compile", False, "Compile the train steps with XLA.")
flags.DEFINE_bool("mixed_precision", False, "mixed_float16 on GPU, mixed_bfloat16 on CPU.")
flags.DEFINE_integer("intra_op_threads", 0, "TensorFlow intra-op threads (0: its default).")
flags.DEFINE_integer("inter_op_threads", 0, "TensorFlow inter-op threads (0: its default).")
flags.DEFINE_string("machine", None, "Name in the output file (default: the GPU's name, "
                    "else cpu<cores>).")
flags.DEFINE_string("output_dir", os.path.join(os.path.dirname(__file__), "results"),
                    "Folder of the result table.")
flags.DEFINE_string("note", "", "A line added under the table's header.")
flags.DEFINE_list("method_params", [], "Method settings beyond the defaults, METHOD.PARAM=VALUE, "
                  "e.g. adt_exp.inner_branches=2 (recorded in the table's header).")
flags.DEFINE_string("memory_probe", None, "Internal: MODEL,BATCH,METHOD; run two steps and "
                    "print the process's peak RSS (used for the CPU memory column).")


def method_of(name: str) -> Variant:
    """A registered method (its defaults) or a variant of `bench.kit.variants` by key."""
    return VARIANTS[name] if name in VARIANTS else Variant(name, name, name, {})


def method_params(method: str) -> dict:
    """The --method_params of one method."""
    return parse_overrides(FLAGS.method_params).get(method, {})


PLAIN_PER_STEP = 3  # plain steps timed before each timed step of the method


def has_gpu() -> bool:
    return bool(tf.config.list_physical_devices("GPU"))


def model_preset(name: str):
    """(builder name, input shape, builder kwargs, epsilon, description) of a preset."""
    if name == "small_cnn":
        return "small_cnn", (28, 28, 1), {}, 0.3, "SmallCNN 28x28x1"
    if name == "cifar":
        if has_gpu():
            return "wrn_28_10", (32, 32, 3), {}, 8 / 255, "WRN-28-10 32x32x3"
        return ("preact_resnet18", (32, 32, 3), {"width": 16}, 8 / 255,
                "PreAct ResNet-18 (width 16) 32x32x3")
    if name == "cpu_recipe":  # the CPU robustness recipe's classifier (adt_tf/recipes/cpu.py)
        return ("small_cnn", (32, 32, 3), {"width": 16, "batch_norm": True, "dropout": 0.0},
                8 / 255, "SmallCNN (width 16, BatchNorm) 32x32x3, the CPU recipe's")
    raise ValueError(f"Unknown model preset {name!r}; known: small_cnn, cifar, cpu_recipe.")


# ---------------------------------------------------------------------- memory
def _proc_status(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def memory_method() -> str:
    if has_gpu():
        return ("GPU allocator peak during one step (tf.config.experimental.get_memory_info), "
                "and in brackets its increase over the memory in use before the step")
    return ("peak resident set size of a fresh process that builds the model and the method "
            "and runs two training steps (VmHWM; TensorFlow runtime and model included: "
            "compare with the standard-training row)")


def gpu_step_memory(step) -> tuple[int, int]:
    """(bytes at the GPU peak of one call of `step`, increase over those in use before)."""
    before = tf.config.experimental.get_memory_info("GPU:0")["current"]
    tf.config.experimental.reset_memory_stats("GPU:0")
    step()
    peak = tf.config.experimental.get_memory_info("GPU:0")["peak"]
    return peak, max(peak - before, 0)


def cpu_process_memory(model: str, batch: int, method: str) -> int | None:
    """Peak RSS in bytes of a fresh process running two steps of `method` (None on failure)."""
    args = [sys.executable, "-m", "bench.speed", f"--memory_probe={model},{batch},{method}",
            f"--jit_compile={FLAGS.jit_compile}", f"--mixed_precision={FLAGS.mixed_precision}",
            f"--intra_op_threads={FLAGS.intra_op_threads}",
            f"--inter_op_threads={FLAGS.inter_op_threads}",
            f"--method_params={','.join(FLAGS.method_params)}"]
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        p for p in (root, os.environ.get("PYTHONPATH")) if p))
    proc = subprocess.run(args, cwd=root, env=env, capture_output=True, text=True)
    found = re.findall(r"^PEAK_RSS_BYTES=(\d+)$", proc.stdout, flags=re.MULTILINE)
    return int(found[-1]) if found else None


def memory_probe(spec: str) -> None:
    model, batch, method = spec.split(",")
    builder, shape, kwargs, epsilon, _ = model_preset(model)
    x, y = batch_of(int(batch), shape)
    spec = method_of(method)
    step = compiled_step(METHODS[spec.method](build_model(builder, shape, 10, **kwargs),
                                              epsilon=epsilon, seed=0,
                                              **{**spec.params, **method_params(method)}),
                         x, y)
    step()
    step()
    peak = _proc_status("VmHWM")
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(f"PEAK_RSS_BYTES={peak}")


# ---------------------------------------------------------------------- timing
def compiled_step(trainer, x, y):
    """A function running one training step of `trainer` on (x, y) and waiting for it."""
    trainer.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                    loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                    jit_compile=FLAGS.jit_compile)
    trainer(x[:1])
    trainer.make_train_function()
    train_function = trainer.train_function
    iterator = iter(tf.data.Dataset.from_tensors((x, y)).repeat())

    def step():
        logs = train_function(iterator)
        return float(logs["loss"])  # waits for the step to finish

    return step


def batch_of(batch: int, shape) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(batch,) + tuple(shape)).astype("float32")
    return x, rng.integers(0, 10, batch).astype("int32")


def timed(step) -> tuple[float, float]:
    """(wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    step()
    return time.perf_counter() - wall, time.process_time() - cpu


def input_gradient_pass(classifier, x, y):
    """A function running one forward (inference mode) + backward to the input on (x, y) and
    waiting for it: an attack step without its projection or bookkeeping."""
    x, y = tf.constant(x), tf.constant(y)

    @tf.function(jit_compile=FLAGS.jit_compile)
    def run():
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x)
            loss = tf.reduce_sum(keras.losses.sparse_categorical_crossentropy(
                y, tf.cast(classifier(x, training=False), tf.float32), from_logits=True))
        return tf.reduce_sum(tf.cast(tape.gradient(loss, x), tf.float32))

    return lambda: float(run())


class FloorPasses:
    """The classifier passes of `floor_passes()`, built once per (kind, batch multiple)."""

    def __init__(self, classifier, x, y):
        self.classifier, self.x, self.y = classifier, x, y
        self.functions = {}

    def function(self, kind: str, multiple: int):
        key = (kind, multiple)
        if key not in self.functions:
            x = np.concatenate([self.x] * multiple)
            y = np.concatenate([self.y] * multiple)
            fn = (input_gradient_pass(self.classifier(), x, y) if kind == "input_gradient"
                  else compiled_step(StandardTraining(self.classifier()), x, y))
            for _ in range(FLAGS.warmup):
                fn()
            self.functions[key] = fn
        return self.functions[key]


def measure(model: str, batch: int, methods: list[str]) -> list[dict]:
    builder, shape, kwargs, epsilon, _ = model_preset(model)
    x, y = batch_of(batch, shape)

    def classifier():
        return build_model(builder, shape, 10, **kwargs)

    keras.utils.set_random_seed(0)
    plain = compiled_step(StandardTraining(classifier()), x, y)
    for _ in range(FLAGS.warmup):
        plain()
    floor_fns = FloorPasses(classifier, x, y)
    rows = []
    for name in methods:
        row = {"model": model, "batch": batch, "method": name}
        try:
            spec = method_of(name)
            trainer = METHODS[spec.method](classifier(), epsilon=epsilon, seed=0,
                                           **{**spec.params, **method_params(name)})
            step = compiled_step(trainer, x, y)
            for _ in range(FLAGS.warmup):
                step()
            floor = trainer.floor_passes() or []
            passes_fns = [(p, floor_fns.function(p.kind, p.batch_multiple)) for p in floor]
            plain_times, times, floor_times = [], [], {p: [] for p in floor}
            for _ in range(FLAGS.steps):  # interleaved: all see the same load
                for _ in range(PLAIN_PER_STEP):  # cheap, and a steadier median
                    plain_times.append(timed(plain))
                for p, fn in passes_fns:
                    floor_times[p].append(timed(fn)[0])
                times.append(timed(step))
            if has_gpu():
                row["memory"], row["memory_step"] = gpu_step_memory(step)
        except Exception as err:  # noqa: BLE001 - one broken method must not stop the table
            row["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
            print(f"{model} b{batch} {name}: {row['error']}")
            rows.append(row)
            continue
        passes = trainer.forward_backward_passes()
        family = getattr(trainer, "family", None)
        if family is not None:  # ADT_EXP's distribution: its parameters per example
            row["distribution_params"] = family.parameter_count(shape)
        row.update({
            "passes": passes,
            "step": statistics.median(t[0] for t in times),
            "step_cpu": statistics.median(t[1] for t in times),
            "plain": statistics.median(t[0] for t in plain_times),
            "plain_cpu": statistics.median(t[1] for t in plain_times),
        })
        if passes:
            row["floor"] = row["step"] / (passes * row["plain"])
            row["floor_cpu"] = row["step_cpu"] / (passes * row["plain_cpu"])
        if floor:
            row["measured_floor"] = sum(p.count * statistics.median(floor_times[p])
                                        for p in floor)
            row["floor_parts"] = ", ".join(
                f"{p.count} x {p.kind.replace('_', '-')}({p.batch_multiple}B) "
                f"{1e3 * statistics.median(floor_times[p]):.1f} ms" for p in floor)
        if not has_gpu():
            row["memory"] = cpu_process_memory(model, batch, name)
        print(format_row(row), flush=True)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------- report
COLUMNS = ("model", "batch", "method", "passes", "step ms", "images/s", "plain step ms",
           "floor ratio", "floor ratio (CPU time)", "measured floor ms", "step / floor",
           "memory peak MiB")


def format_row(row: dict) -> str:
    if "error" in row:
        return f"| {row['model']} | {row['batch']} | {row['method']} | | {row['error']} |"

    def ratio(key):
        return f"{row[key]:.2f}" if key in row else "n/a"

    return "| " + " | ".join([
        row["model"], str(row["batch"]), row["method"], str(row["passes"] or "n/a"),
        f"{1e3 * row['step']:.1f}", f"{row['batch'] / row['step']:.0f}",
        f"{1e3 * row['plain']:.1f}", ratio("floor"), ratio("floor_cpu"),
        f"{1e3 * row['measured_floor']:.1f}" if "measured_floor" in row else "n/a",
        f"{row['step'] / row['measured_floor']:.2f}" if "measured_floor" in row else "n/a",
        memory(row),
    ]) + " |"


def family_rows(rows: list[dict]) -> list[str]:
    """ADT_EXP's distribution families side by side: each one's step relative to the
    diagonal ADT_EXP's in the same run (same model and batch), its parameters per example
    and its process's memory peak."""
    out = []
    for row in rows:
        if "distribution_params" not in row or "step" not in row:
            continue
        base = next((r for r in rows if r.get("method") == "adt_exp" and "step" in r
                     and (r["model"], r["batch"]) == (row["model"], row["batch"])), None)
        if not out:
            out = ["", "ADT_EXP's distribution families, each step relative to the diagonal "
                   "ADT_EXP's of the same model and batch in this run: as timed, and as "
                   "step / measured floor over the diagonal's step / measured floor (the "
                   "floor's classifier passes are the same for every family and timed beside "
                   "each step, so this one does not move with the machine's load):", "",
                   "| model | batch | method | step ms | step / diagonal's | (step / floor) / "
                   "diagonal's | distribution parameters per example | memory peak MiB |",
                   "|---|---|---|---:|---:|---:|---:|---:|"]
        relative = f"{row['step'] / base['step']:.2f}" if base else "n/a"
        floors = base is not None and "measured_floor" in row and "measured_floor" in base
        normalised = "n/a"
        if floors:
            ratio = ((row["step"] / row["measured_floor"])
                     / (base["step"] / base["measured_floor"]))
            normalised = f"{ratio:.2f}"
        out.append(f"| {row['model']} | {row['batch']} | {row['method']} | "
                   f"{1e3 * row['step']:.1f} | {relative} | {normalised} | "
                   f"{row['distribution_params']:,} | {memory(row)} |")
    return out


def memory(row: dict) -> str:
    if row.get("memory") is None:
        return "n/a"
    text = f"{row['memory'] / 2**20:.0f}"
    return text + (f" (+{row['memory_step'] / 2**20:.0f})" if "memory_step" in row else "")


def device_description() -> str:
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        details = tf.config.experimental.get_device_details(gpus[0])
        return f"{len(gpus)} x {details.get('device_name', 'GPU')}"
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"CPU: {cpu}, {os.cpu_count()} cores, no GPU"


def machine_name() -> str:
    if FLAGS.machine:
        return FLAGS.machine
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        name = tf.config.experimental.get_device_details(gpus[0]).get("device_name", "gpu")
        return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
    return f"cpu{os.cpu_count()}"


def report(rows: list[dict], load_before, load_after, models: list[str]) -> str:
    cores = os.cpu_count() or 1
    busy = max(load_before[0], load_after[0]) > 0.5 * cores
    lines = [
        f"# Training speed on {machine_name()}",
        "",
        f"- Device: {device_description()}; TensorFlow {tf.__version__}, Keras "
        f"{keras.__version__}; {datetime.date.today().isoformat()}.",
        f"- Load average (1, 5, 15 min) before: {', '.join(f'{v:.2f}' for v in load_before)}; "
        f"after: {', '.join(f'{v:.2f}' for v in load_after)} (on {cores} cores)."
        + (" **The machine was busy with other processes: every time here is slower and "
           "noisier than on a quiet machine.**" if busy else ""),
        f"- XLA: {'on' if FLAGS.jit_compile else 'off'}; mixed precision: "
        f"{'on' if FLAGS.mixed_precision else 'off'}; threads intra/inter: "
        f"{FLAGS.intra_op_threads or 'default'}/{FLAGS.inter_op_threads or 'default'}; "
        f"{FLAGS.warmup} warm-up steps, median of {FLAGS.steps} timed steps; method settings "
        f"beyond the defaults: {', '.join(FLAGS.method_params) or 'none'}.",
        "- Models: " + "; ".join(f"{m} = {model_preset(m)[4]}" for m in models) + ".",
        "- Floor ratio = step time / (passes x plain step time), the plain step (standard "
        f"training, one forward+backward) timed in the same run, {PLAIN_PER_STEP} before "
        "each timed step of the method (medians of both). Passes as "
        "declared by each method (`forward_backward_passes()`).",
        "- Measured floor = the sum of the passes the method cannot avoid "
        "(`floor_passes()`), each timed on its own beside every timed step of the method "
        "(medians): input-gradient = one forward in inference mode and the backward to the "
        "input on that batch; train = one standard training step on that batch. Step / "
        "floor near 1: the method's own work costs nothing beyond those passes. The passes "
        "of each row are listed below the table.",
        f"- Memory: {memory_method()}.",
    ]
    if FLAGS.note:
        lines.append(f"- {FLAGS.note}")
    lines += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += [format_row(r) for r in rows]
    lines += family_rows(rows)
    parts = [f"- {r['model']} b{r['batch']} {r['method']}: {r['floor_parts']}" for r in rows
             if "floor_parts" in r]
    if parts:
        lines += ["", "Floor passes (median time of one each):", ""] + parts
    return "\n".join(lines) + "\n"


def apply_runtime_flags() -> None:
    """Threads and dtype policy from the flags (before any TensorFlow work)."""
    if FLAGS.intra_op_threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.intra_op_threads)
    if FLAGS.inter_op_threads:
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.inter_op_threads)
    if FLAGS.mixed_precision:
        keras.config.set_dtype_policy("mixed_float16" if has_gpu() else "mixed_bfloat16")


def main(argv):
    del argv
    apply_runtime_flags()
    if FLAGS.memory_probe:
        memory_probe(FLAGS.memory_probe)
        return
    methods = FLAGS.methods or list(METHODS)
    unknown = [m for m in methods if m not in METHODS and m not in VARIANTS]
    if unknown:
        raise app.UsageError(f"Unknown methods {unknown}; known: {', '.join(METHODS)} and the "
                             f"variants {', '.join(v for v in VARIANTS if v not in METHODS)}.")
    for m in FLAGS.models:
        model_preset(m)
    load_before = os.getloadavg()
    rows = []
    for model in FLAGS.models:
        for batch in (int(b) for b in FLAGS.batch_sizes):
            rows += measure(model, batch, methods)
    text = report(rows, load_before, os.getloadavg(), FLAGS.models)
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    path = os.path.join(FLAGS.output_dir, f"speed_{machine_name()}.md")
    write_text(path, text)
    print(text)
    print(f"Written to {path}")


if __name__ == "__main__":
    app.run(main)
