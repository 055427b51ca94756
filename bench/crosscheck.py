"""Cross-check of our `autoattack` suite against an independent toolbox on the same models.

The same classifiers, the same test inputs and the same budget (L-infinity, epsilon 8/255),
attacked twice, each side chained AutoAttack's way (every attack runs on the inputs still
robust after the earlier ones):

- ours: the `autoattack` suite (APGD-CE, APGD-T with 9 targets, FAB-T with 9 targets, Square
  with 5,000 queries; `adt_tf.evaluation.suites`), as `adt-evaluate --suite=autoattack` runs it;
- adversarial-robustness-toolbox (the `reference` extra): its ProjectedGradientDescent
  (20 steps of epsilon/4, one random start), AutoProjectedGradientDescent on the CE and on the
  DLR loss (100 iterations, its default 5 random starts each) and SquareAttack (5,000
  iterations, p_init 0.8).

Per attack the survivors, the worst case, its binomial standard error and each side's wall
time are written to bench/results/crosscheck_<tag>.md and .json. Our worst case must be at most
the toolbox's + 1 point (the table says whether it is). Resumable: each side's per-attack
results are cached under --workdir.

    python -m bench.crosscheck \
        --models=standard=/path/to/standard/classifier.keras,at_pgd=/path/to/pgd_at/workdir
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
from absl import app, flags

from adt_tf.core.files import write_json, write_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "cifar10"))
#: Our worst case may exceed the toolbox's by at most this (a point of accuracy).
TOLERANCE = 0.01


def standard_error(p: float, n: int) -> float:
    """The binomial standard error of an accuracy p measured on n inputs."""
    return float(np.sqrt(max(p * (1.0 - p), 0.0) / max(n, 1)))


def ours(classifier, x, y, epsilon: float, *, suite: str = "autoattack",
         overrides: dict | None = None, cache_dir: str | None = None, model_id: str | None = None,
         batch_size: int = 250, seed: int = 0, verbose: int = 0) -> dict:
    """Our chain: per attack {label, survivors, seconds}, and the clean-correct count."""
    from adt_tf.evaluation import evaluate

    result = evaluate(classifier, x, y, epsilon, suite=suite, overrides=overrides,
                      per_attack="remaining", batch_size=batch_size, seed=seed,
                      cache_dir=cache_dir, model_id=model_id, sanity_checks=False,
                      verbose=verbose)
    n = len(y)
    # A cached attack reports the time it took when it ran.
    stages = [{"label": a.label, "survivors": int(round(a.robust_after * n)),
               "seconds": float(a.seconds)} for a in result.attacks]
    return {"clean": int(result.per_example["clean"].sum()), "stages": stages,
            "robust": result.per_example["robust"]}


def toolbox_stages(epsilon: float, *, pgd_steps: int = 20, apgd_steps: int = 100,
                   apgd_restarts: int = 5, square_queries: int = 5000, batch_size: int = 250):
    """The toolbox's attacks, in order: [(label, settings, build(estimator) -> attack)]."""
    from art.attacks import evasion

    return [
        (f"ART PGD-{pgd_steps}", {"max_iter": pgd_steps, "eps_step": epsilon / 4},
         lambda est: evasion.ProjectedGradientDescent(
             est, norm=np.inf, eps=epsilon, eps_step=epsilon / 4, max_iter=pgd_steps,
             num_random_init=1, batch_size=batch_size, verbose=False)),
        (f"ART APGD-CE ({apgd_restarts} restarts)", {"max_iter": apgd_steps},
         lambda est: evasion.AutoProjectedGradientDescent(
             est, norm=np.inf, eps=epsilon, eps_step=2 * epsilon, max_iter=apgd_steps,
             nb_random_init=apgd_restarts, batch_size=batch_size,
             loss_type="cross_entropy", verbose=False)),
        (f"ART APGD-DLR ({apgd_restarts} restarts)", {"max_iter": apgd_steps},
         lambda est: evasion.AutoProjectedGradientDescent(
             est, norm=np.inf, eps=epsilon, eps_step=2 * epsilon, max_iter=apgd_steps,
             nb_random_init=apgd_restarts, batch_size=batch_size,
             loss_type="difference_logits_ratio", verbose=False)),
        (f"ART Square ({square_queries} queries)", {"max_iter": square_queries},
         lambda est: evasion.SquareAttack(
             est, norm=np.inf, eps=epsilon, max_iter=square_queries, p_init=0.8,
             nb_restarts=1, batch_size=batch_size, verbose=False)),
    ]


def toolbox(classifier, x, y, epsilon: float, stages, *, cache_dir: str | None = None,
            model_id: str = "model", seed: int = 0) -> dict:
    """The toolbox's chain on the same inputs: per attack {label, survivors, seconds}."""
    import keras
    from art.estimators.classification import TensorFlowV2Classifier

    from adt_tf.evaluation.cache import array_id, cache_file

    num_classes = int(np.asarray(classifier(x[:1], training=False)).shape[-1])
    estimator = TensorFlowV2Classifier(
        model=classifier, nb_classes=num_classes, input_shape=tuple(x.shape[1:]),
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        clip_values=(0.0, 1.0))

    def correct(images, labels):
        return np.argmax(estimator.predict(images, batch_size=250), -1) == labels

    robust = correct(x, y)
    clean = int(robust.sum())
    out = []
    for label, settings, build in stages:
        path = cache_file(cache_dir, "art", {
            "model": model_id, "data": array_id(x, y), "label": label, "settings": settings,
            "epsilon": epsilon, "seed": seed, "before": array_id(robust)}) if cache_dir else None
        if path and os.path.exists(path):
            with np.load(path) as data:
                robust, seconds = data["robust"].copy(), float(data["seconds"])
        else:
            np.random.seed(seed)  # the toolbox draws its random starts from NumPy
            idx = np.flatnonzero(robust)
            t0 = time.perf_counter()
            if len(idx):
                x_adv = build(estimator).generate(x[idx], y=y[idx])
                assert np.abs(x_adv - x[idx]).max() <= epsilon + 1e-5, label
                robust = robust.copy()
                robust[idx] = correct(x_adv, y[idx])
            seconds = time.perf_counter() - t0
            if path:
                os.makedirs(cache_dir, exist_ok=True)
                np.savez(path + ".tmp.npz", robust=robust, seconds=seconds)
                os.replace(path + ".tmp.npz", path)
        out.append({"label": label, "survivors": int(robust.sum()), "seconds": seconds})
    return {"clean": clean, "stages": out, "robust": robust}


def compare(name: str, n: int, mine: dict, theirs: dict) -> dict:
    """One model's row: both chains, worst cases, errors, the verdict and the time ratio."""
    ours_worst = mine["stages"][-1]["survivors"] / n
    art_worst = theirs["stages"][-1]["survivors"] / n
    ours_time = sum(s["seconds"] for s in mine["stages"])
    art_time = sum(s["seconds"] for s in theirs["stages"])
    return {"model": name, "num_inputs": n,
            "clean": mine["clean"] / n, "clean_toolbox": theirs["clean"] / n,
            "ours": mine["stages"], "toolbox": theirs["stages"],
            "ours_worst": ours_worst, "toolbox_worst": art_worst,
            "ours_worst_se": standard_error(ours_worst, n),
            "toolbox_worst_se": standard_error(art_worst, n),
            "within_tolerance": bool(ours_worst <= art_worst + TOLERANCE),
            "ours_seconds": ours_time, "toolbox_seconds": art_time,
            "time_ratio": ours_time / art_time if art_time else None,
            "broken_only_by_toolbox": int((mine["robust"] & ~theirs["robust"]).sum()),
            "broken_only_by_ours": int((~mine["robust"] & theirs["robust"]).sum())}


def to_markdown(rows: list[dict], command: str, environment: dict) -> str:
    def pct(v, n):
        return f"{100 * v:.1f}% ± {100 * standard_error(v, n):.1f}"

    lines = ["# Cross-check: our `autoattack` suite against adversarial-robustness-toolbox", "",
             f"Command: `{command}`", "",
             f"Machine: {environment.get('cpu')}, {environment.get('cpu_count')} cores; "
             f"TensorFlow {environment.get('tensorflow')}, adt_tf {environment.get('adt_tf')}, "
             f"adversarial-robustness-toolbox {environment.get('art')}.", "",
             "L-infinity, epsilon 8/255; each side chained AutoAttack's way (every attack on the "
             "inputs still robust after the earlier ones). ± is the binomial standard error "
             "sqrt(p(1-p)/n) of each accuracy on its n test inputs (the first n CIFAR-10 test "
             "images). Pass: our worst case <= the toolbox's + 1 point.", ""]
    for row in rows:
        n = row["num_inputs"]
        lines += [f"## {row['model']} ({n} test inputs)", "",
                  f"Clean: {pct(row['clean'], n)}.", "",
                  "| side | attack | robust after it | seconds |", "|---|---|---|---|"]
        for side, key in (("ours", "ours"), ("toolbox", "toolbox")):
            for stage in row[key]:
                lines.append(f"| {side} | {stage['label']} | "
                             f"{pct(stage['survivors'] / n, n)} | {stage['seconds']:.0f} |")
        verdict = "pass" if row["within_tolerance"] else "FAIL"
        ratio = row["time_ratio"]
        lines += ["", f"Worst case: ours {pct(row['ours_worst'], n)}, toolbox "
                  f"{pct(row['toolbox_worst'], n)} ({verdict}). Inputs broken only by the "
                  f"toolbox: {row['broken_only_by_toolbox']}; only by ours: "
                  f"{row['broken_only_by_ours']}. Time: ours {row['ours_seconds']:.0f} s, "
                  f"toolbox {row['toolbox_seconds']:.0f} s"
                  + (f" (ratio ours/toolbox {ratio:.2f})." if ratio else "."), ""]
    return "\n".join(lines) + "\n"


FLAGS = flags.FLAGS


def define_flags() -> None:
    """The command line's flags (defined only when run as a script: the test imports this
    module beside other commands' flags)."""
    flags.DEFINE_list("models", [], "NAME=PATH pairs: a .keras classifier, a training workdir or a "
                      "SavedModel export each.")
    flags.DEFINE_string("data", DEFAULT_DATA, "A folder with train.npz and test.npz (CIFAR-10).")
    flags.DEFINE_integer("examples", 500, "Test inputs (the first ones).")
    flags.DEFINE_float("epsilon", 8 / 255, "L-infinity budget.")
    flags.DEFINE_string("workdir", os.path.join(ROOT, "bench", "runs", "crosscheck"),
                        "Where each side's per-attack results are cached (resumable).")
    flags.DEFINE_string("tag", "cpu", "Results go to bench/results/crosscheck_<tag>.md/.json.")
    flags.DEFINE_integer("threads", 0, "TensorFlow threads per op (0: its default).")


def main(argv) -> None:
    del argv
    import tensorflow as tf

    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
    from adt_tf import data as data_lib
    from adt_tf.artifacts.loading import file_id, load_classifier, resolve_model_path
    from adt_tf.evaluation import environment

    if not FLAGS.models:
        sys.exit("bench.crosscheck: --models needs at least one NAME=PATH.")
    try:
        import art
    except ImportError:
        sys.exit("bench.crosscheck: needs adversarial-robustness-toolbox (pip install -e "
                 "'.[reference]').")
    splits = data_lib.load(f"npz:{FLAGS.data}", max_test_examples=FLAGS.examples)
    x = data_lib.as_unit_float(splits.x_test)
    y = splits.y_test.astype(np.int32)
    rows = []
    for item in FLAGS.models:
        name, _, path = item.partition("=")
        if not path:
            sys.exit(f"bench.crosscheck: --models entry {item!r} is not NAME=PATH.")
        model_path = resolve_model_path(path)
        classifier = load_classifier(model_path)
        model_id = file_id(model_path)
        cache = os.path.join(FLAGS.workdir, name)
        print(f"[{name}] ours: autoattack suite on {len(y)} inputs", flush=True)
        mine = ours(classifier, x, y, FLAGS.epsilon, cache_dir=cache, model_id=model_id,
                    verbose=1)
        print(f"[{name}] toolbox chain", flush=True)
        theirs = toolbox(classifier, x, y, FLAGS.epsilon, toolbox_stages(FLAGS.epsilon),
                         cache_dir=cache, model_id=model_id)
        rows.append(compare(name, len(y), mine, theirs))
        print(json.dumps({k: v for k, v in rows[-1].items() if k not in ("ours", "toolbox")}),
              flush=True)
    env = dict(environment(), art=art.__version__)
    command = "python -m bench.crosscheck " + " ".join(
        a for a in sys.argv[1:] if not a.startswith("--workdir"))
    out = os.path.join(ROOT, "bench", "results", f"crosscheck_{FLAGS.tag}")
    write_json(out + ".json", {"command": command, "environment": env, "rows": rows}, indent=1)
    write_text(out + ".md", to_markdown(rows, command, env))
    print(f"wrote {out}.md")


if __name__ == "__main__":
    define_flags()
    app.run(main)
