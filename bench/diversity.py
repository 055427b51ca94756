"""Diversity of the EXP distribution's samples against PGD restarts (paper Fig. 1), measured.

The paper reports an average pairwise L2 distance of 1.95 for 10 samples of the learned EXP
distribution against 1.56 for 10 PGD-20 restarts (100 CIFAR-10 test images, a standard-trained
WRN). This benchmark measures the same on a standard model trained here on all 50,000 training
images of the offline copy, for both T/k settings (the EXP attack's T = 20, k = 10 and
training's T = 7, k = 5), a few lambdas, and both inner-gradient rules (the reference's
accumulated gradients and the fresh-gradient variant), and records how sigma = softplus(v)
and mu evolve over the inner steps.

    python -m bench.diversity                     # trains the model once (resumable), then
                                                  # writes bench/results/diversity_cifar10_cpu.*
    # The richer distributions (beyond the paper) against the diagonal one, on the same model:
    python -m bench.diversity --families=diag,lowrank,matrix_normal --settings=20x10 \
        --gradients=accumulate --lambdas=0.01     # -> diversity_cifar10_cpu_families.*

Writes bench/results/diversity_cifar10_cpu.md (table), .json (every number) and .png (sigma
per inner step: mean and 10-90% band; share of saturated coordinates).
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
from absl import app, flags

from adt_tf.core.files import write_json, write_text
from bench.kit.runs import check_recorded_run, command_line, fail, require_data, set_threads

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "cifar10"))
#: |tanh(mu)| above this counts as a saturated coordinate: the distribution's centre sits on
#: the face of the epsilon-box.
SATURATION = 0.99

FLAGS = flags.FLAGS


def define_flags() -> None:
    if "lambdas" in FLAGS:
        return
    flags.DEFINE_string("data", DEFAULT_DATA, "Folder holding train.npz and test.npz.")
    flags.DEFINE_string("workdir", os.path.join(ROOT, "bench", "runs", "diversity"),
                        "Where the standard model is trained (resumable).")
    flags.DEFINE_string("output_dir", os.path.join(ROOT, "bench", "results"), "Table folder.")
    flags.DEFINE_string("model", "preact_resnet18", "Classifier architecture.")
    flags.DEFINE_integer("model_width", 16, "Its width (16: a CPU-sized PreAct ResNet-18).")
    flags.DEFINE_integer("epochs", 5, "Standard-training epochs on all 50,000 images.")
    flags.DEFINE_integer("batch_size", 128, "Training batch size.")
    flags.DEFINE_float("lr", 0.1, "SGD learning rate (x0.1 from the last epoch on).")
    flags.DEFINE_integer("num_inputs", 100, "Test images (the paper: 100).")
    flags.DEFINE_integer("num_samples", 10, "Samples / restarts per input (the paper: 10).")
    flags.DEFINE_list("lambdas", ["0.001", "0.01", "0.1", "1.0"], "Entropy weights.")
    flags.DEFINE_list("settings", ["20x10", "7x5"], "Inner steps T x samples k.")
    flags.DEFINE_list("gradients", ["accumulate", "fresh"], "Inner-gradient rules.")
    flags.DEFINE_list("families", ["diag"], "The EXP distribution's Gaussian bases "
                      "(adt_tf.adt.families: diag, the paper's; lowrank; matrix_normal); "
                      "more than diag writes the table with the suffix _families.")
    flags.DEFINE_integer("threads", 0, "TensorFlow threads (0: default).")
    flags.DEFINE_integer("seed", 0, "Seed of training and of the attacks.")
    flags.DEFINE_enum("norm", "linf", ["linf", "l2"], "Threat model of both attacks: linf "
                      "(the paper's, epsilon 8/255) or l2 (epsilon 0.5: EXP's radial "
                      "distribution against PGD-L2); the same standard model either way.")


def train_model(data: str, workdir: str):
    from adt_tf.training.config import RunConfig, override
    from adt_tf.training.run import run_training

    config = override(RunConfig(), {
        "run.workdir": workdir, "method.name": "standard", "data.dataset": f"npz:{data}",
        "model.name": FLAGS.model, "model.params": {"width": FLAGS.model_width},
        "optim.epochs": FLAGS.epochs, "optim.batch_size": FLAGS.batch_size,
        "optim.lr": FLAGS.lr, "optim.lr_decay_epochs": (FLAGS.epochs,),
        "run.seed": FLAGS.seed, "report.eval_examples": 1000, "run.verbose": 2})
    report_path = os.path.join(workdir, "report.json")
    check_recorded_run(workdir, config, "bench.diversity")
    if os.path.exists(report_path):
        with open(report_path) as f:
            return json.load(f), config
    t0 = time.perf_counter()
    report = run_training(config)
    report["train_seconds"] = time.perf_counter() - t0
    write_json(report_path, report)
    return report, config


def trajectory_stats(fitted, norm: str = "linf") -> list[dict]:
    """Per inner step: mean, 10th and 90th percentile of sigma; mean |mu|; the saturated
    share: of coordinates with |tanh(mu)| > SATURATION (L-infinity: the centre on the box's
    face), or of inputs with tanh(||mu||) > SATURATION (L2: the centre on the sphere)."""
    import tensorflow as tf

    rows = []
    for loc, raw in fitted.trace:
        sigma = tf.math.softplus(raw).numpy().ravel()
        mu = loc.numpy()
        if norm == "linf":
            saturated = np.abs(np.tanh(mu.ravel())) > SATURATION
        else:
            saturated = np.tanh(np.linalg.norm(mu.reshape(len(mu), -1), axis=1)) > SATURATION
        rows.append({
            "sigma_mean": float(sigma.mean()),
            "sigma_p10": float(np.percentile(sigma, 10)),
            "sigma_p90": float(np.percentile(sigma, 90)),
            "abs_mu_mean": float(np.abs(mu).mean()),
            "saturated": float(np.mean(saturated)),
        })
    return rows


def measure(classifier, x, y, threat) -> dict:
    from adt_tf.analysis.diversity import average_pairwise_distance, exp_samples, pgd_samples

    results = {"pgd": None, "exp": []}
    t0 = time.perf_counter()
    pgd = pgd_samples(classifier, x, y, threat, FLAGS.num_samples, seed=FLAGS.seed).numpy()
    results["pgd"] = {"mean_distance": float(average_pairwise_distance(
        np.swapaxes(pgd, 0, 1)).mean()), "seconds": time.perf_counter() - t0}
    print(f"PGD-20 restarts: {results['pgd']['mean_distance']:.3f}", flush=True)
    runs = [(family, setting, rule, float(lam)) for family in FLAGS.families
            for setting in FLAGS.settings for rule in FLAGS.gradients for lam in FLAGS.lambdas]
    for family, setting, rule, lam in runs:
        steps, mc = (int(v) for v in setting.split("x"))
        t0 = time.perf_counter()
        samples, fitted = exp_samples(
            classifier, x, y, threat, FLAGS.num_samples, steps=steps,
            mc_samples=mc, entropy_weight=lam, gradients=rule, family=family,
            seed=FLAGS.seed, return_fit=True)
        samples = samples.numpy()
        logits = classifier(samples.reshape((-1,) + samples.shape[2:]), training=False)
        fooled = np.mean(np.argmax(logits, -1) != np.tile(y, FLAGS.num_samples))
        row = {"family": family, "steps": steps, "mc_samples": mc, "gradients": rule,
               "entropy_weight": lam,
               "mean_distance": float(average_pairwise_distance(
                   np.swapaxes(samples, 0, 1)).mean()),
               "fooling_rate": float(fooled),
               "trajectory": trajectory_stats(fitted, FLAGS.norm),
               "seconds": time.perf_counter() - t0}
        results["exp"].append(row)
        last = row["trajectory"][-1]
        print(f"EXP {family} T={steps} k={mc} {rule:10s} lambda={lam:g}: distance "
              f"{row['mean_distance']:.3f}, fooled {100 * fooled:.1f}%, sigma "
              f"{last['sigma_mean']:.3f}, saturated {100 * last['saturated']:.1f}%",
              flush=True)
    return results


def plot(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    settings = sorted({(r["steps"], r["mc_samples"]) for r in results["exp"]}, reverse=True)
    fig, axes = plt.subplots(2, len(settings), figsize=(6 * len(settings), 8), squeeze=False)
    for col, (steps, mc) in enumerate(settings):
        for row in results["exp"]:
            if (row["steps"], row["mc_samples"]) != (steps, mc):
                continue
            t = np.arange(1, len(row["trajectory"]) + 1)
            mean = [s["sigma_mean"] for s in row["trajectory"]]
            style = "-" if row["gradients"] == "accumulate" else "--"
            label = f"{row['gradients']}, λ={row['entropy_weight']:g}"
            line, = axes[0, col].plot(t, mean, style, label=label)
            axes[0, col].fill_between(t, [s["sigma_p10"] for s in row["trajectory"]],
                                      [s["sigma_p90"] for s in row["trajectory"]],
                                      color=line.get_color(), alpha=0.12)
            axes[1, col].plot(t, [100 * s["saturated"] for s in row["trajectory"]], style,
                              color=line.get_color(), label=label)
        axes[0, col].set(title=f"σ = softplus(v), T={steps}, k={mc} (mean, 10-90% band)",
                         xlabel="inner step", ylabel="σ")
        axes[1, col].set(title=f"saturated coordinates |tanh μ| > {SATURATION}"
                         if FLAGS.norm == "linf" else
                         f"inputs with saturated radius tanh ||μ|| > {SATURATION}",
                         xlabel="inner step",
                         ylabel="% of coordinates" if FLAGS.norm == "linf" else "% of inputs")
        axes[0, col].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def write_table(report: dict, config, results: dict, stem: str, command: str) -> None:
    import tensorflow as tf

    pgd = results["pgd"]["mean_distance"]
    l2 = FLAGS.norm == "l2"
    paper_pgd, paper_exp = (("no paper number: the paper is L-infinity only",) * 2 if l2
                            else ("paper, WRN-28-10: 1.56", "paper, T = 20, k = 10, "
                                  "lambda = 0.01: 1.95"))
    saturation = (f"the share of inputs whose centre is on the sphere (tanh ||mu|| > "
                  f"{SATURATION})" if l2 else
                  f"the saturated share of coordinates (|tanh(mu)| > {SATURATION})")
    lines = [
        "# Diversity of adversarial samples (paper Fig. 1), CIFAR-10, CPU"
        + (", L2 ball of radius 0.5" if l2 else ""),
        "",
        f"- Model: Standard training of {config.model.name}(width={FLAGS.model_width}) on all "
        f"50,000 training images of `{os.path.relpath(FLAGS.data, ROOT)}` (the offline "
        "CIFAR-10 copy; most training images decoded from a JPEG copy, so not pixel-exact), "
        f"{config.optim.epochs} epochs, batch {config.optim.batch_size}, SGD lr "
        f"{config.optim.lr} (x0.1 in the "
        "last epoch), momentum 0.9, weight decay 2e-4 (coupled), random crop and flip; "
        f"clean accuracy {100 * report['clean_accuracy']:.2f}% and PGD-20 "
        f"{100 * report['pgd20_accuracy']:.2f}% on the first {report['num_examples']} test "
        "images.",
        f"- Inputs: the first {FLAGS.num_inputs} test images (pixel-exact); "
        f"{FLAGS.num_samples} samples per input; "
        + ("L2 epsilon 0.5" if l2 else "epsilon 8/255") + ". Distance: the average "
        "pairwise L2 distance of an input's samples (pixels in [0, 1]), averaged over inputs.",
        "- PGD: PGD-20" + ("-L2 (normalised steps)" if l2 else "") + ", step epsilon/4, "
        f"{FLAGS.num_samples} uniform random starts in the ball: **{pgd:.3f}** ({paper_pgd}).",
        "- EXP: ADT_EXP's inner maximisation against the fixed model (Adam lr 0.3, betas 0"
        + (", the radial distribution onto the L2 ball" if l2 else "")
        + f"), then {FLAGS.num_samples} fresh samples of the fitted distribution "
        f"({paper_exp}). 'accumulate' is the reference's inner loop (gradients "
        "never zeroed), 'fresh' the variant with one gradient per step. sigma and "
        f"{saturation} are after the last inner step; the plot shows them per step. "
        "family: the distribution's Gaussian base (`adt_tf.adt.families`: diag, the paper's; "
        "lowrank, R = 8; matrix_normal, 32 x 96; each factor block with its family's own "
        "step, beyond the paper); σ is its diagonal part.",
        f"- Machine: {os.cpu_count()} cores; TensorFlow {tf.__version__}.",
        "",
        "| family | T | k | inner gradients | λ | distance | vs PGD | samples fooling the "
        "model (%) | σ mean (10-90%) | mean abs μ | saturated (%) |",
        "|---|---:|---:|---|---:|---:|---:|---:|---|---:|---:|",
    ]
    for row in results["exp"]:
        last = row["trajectory"][-1]
        lines.append(
            f"| {row.get('family', 'diag')} | {row['steps']} | {row['mc_samples']} | "
            f"{row['gradients']} | "
            f"{row['entropy_weight']:g} | {row['mean_distance']:.3f} | "
            f"{row['mean_distance'] / pgd:.2f} | {100 * row['fooling_rate']:.1f} | "
            f"{last['sigma_mean']:.3f} ({last['sigma_p10']:.3f}-{last['sigma_p90']:.3f}) | "
            f"{last['abs_mu_mean']:.2f} | {100 * last['saturated']:.1f} |")
    lines += ["", f"![sigma per inner step]({os.path.basename(stem)}.png)", "",
              f"Command: `{command}`", ""]
    write_text(stem + ".md", "\n".join(lines))
    write_json(stem + ".json", {"model_report": report, "pgd": results["pgd"],
                                "exp": results["exp"], "command": command})


def main(argv):
    del argv
    set_threads(FLAGS.threads)
    require_data(FLAGS.data, "bench.diversity")
    from adt_tf.adt.families import GaussianFamily

    for family in FLAGS.families:
        try:
            GaussianFamily(family)
        except ValueError as err:
            fail("bench.diversity", f"--families: {err}")
    from adt_tf import data as data_lib
    from adt_tf.artifacts.loading import load_classifier
    from adt_tf.data import resolve_threat

    report, config = train_model(FLAGS.data, FLAGS.workdir)
    classifier = load_classifier(os.path.join(FLAGS.workdir, "classifier.keras"))
    splits = data_lib.load(f"npz:{FLAGS.data}", max_train_examples=1,
                           max_test_examples=FLAGS.num_inputs)
    x = data_lib.as_unit_float(splits.x_test[:FLAGS.num_inputs])
    y = splits.y_test[:FLAGS.num_inputs].astype("int32")
    results = measure(classifier, x, y, resolve_threat(FLAGS.norm, None, splits.info))
    os.makedirs(FLAGS.output_dir, exist_ok=True)
    stem = os.path.join(FLAGS.output_dir, "diversity_cifar10_cpu"
                        + ("_l2" if FLAGS.norm == "l2" else "")
                        + ("_families" if FLAGS.families != ["diag"] else ""))
    plot(results, stem + ".png")
    write_table(report, config, results, stem,
                command_line("bench.diversity"))
    print(f"Wrote {stem}.md")


if __name__ == "__main__":
    define_flags()
    app.run(main)
