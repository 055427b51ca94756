"""One analysis run from a plain-data config: load models and data, run the chosen analyses,
write a PNG and a JSON per analysis and a summary. `adt-analyze` fills the config from flags.

Example:
    >>> config = AnalysisConfig(models=["runs/standard", "runs/adt_exp"], out="runs/analysis",
    ...                         num_examples=100)
    >>> summary = run_analyses(config)
    >>> print(format_summary(summary))
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from adt_tf import data as data_lib
from adt_tf.analysis import lambda_study, plots
from adt_tf.analysis.curvature import curvature_analysis
from adt_tf.analysis.diversity import diversity_analysis
from adt_tf.analysis.landscape import loss_grid
from adt_tf.artifacts import loading
from adt_tf.attacks import get_attack
from adt_tf.core import checks
from adt_tf.core.files import write_json
from adt_tf.data import resolve_threat
from adt_tf.evaluation.report import describe_budget
from adt_tf.threat import LinfBall

ANALYSES = ("diversity", "landscape", "curvature", "lambda")


@dataclasses.dataclass
class AnalysisConfig:
    """Everything `run_analyses` needs (attributes mirror the `adt-analyze` flags).

    Attributes:
        models: classifiers: `.keras` files or training workdirs.
        checkpoint: a workdir's "last" or "best" classifier (None: best when the run has a
            validation split, `adt_tf.artifacts.loading.default_checkpoint`).
        dataset, data_dir: the data (its test split is used).
        num_examples: N, the first N test inputs.
        out: output folder.
        analyses: which of "diversity", "landscape", "curvature", "lambda" to run.
        epsilon: L-infinity budget (None: the dataset's default).
        seed, batch_size, verbose: common settings.
        num_samples: n, samples per input of the diversity analysis (>= 2).
        exp_steps, exp_mc_samples, exp_entropy_weight: the EXP attack's T, k and lambda.
        pgd_steps: PGD iterations per restart in the diversity analysis.
        pca_inputs: inputs drawn in the PCA grid.
        grid_size, landscape_span, landscape_inputs, landscape_plot: the loss grid (points
            per axis, extent in epsilons, inputs drawn, "contour" or "surface").
        power_iterations: Hessian-vector products per input of the curvature analysis.
        lambda_table: a tuner trial table (CSV/JSON); when given, the lambda study plots it
            instead of evaluating the models.
        lambdas: the lambda of each model (default: from each run's config.json).
        lambda_attacks: attacks of the lambda study (registry names).
    """

    models: list[str] = dataclasses.field(default_factory=list)
    checkpoint: str | None = None
    dataset: str = data_lib.SAMPLE
    data_dir: str | None = None
    num_examples: int = 100
    out: str = "runs/analysis"
    analyses: tuple[str, ...] = ("diversity", "landscape", "curvature")
    epsilon: float | None = None
    seed: int = 0
    batch_size: int = 32
    verbose: int = 1
    num_samples: int = 10
    exp_steps: int = 20
    exp_mc_samples: int = 10
    exp_entropy_weight: float = 0.01
    pgd_steps: int = 20
    pca_inputs: int = 8
    grid_size: int = 21
    landscape_span: float = 1.0
    landscape_inputs: int = 2
    landscape_plot: str = "contour"
    power_iterations: int = 20
    lambda_table: str | None = None
    lambdas: list[float] | None = None
    lambda_attacks: tuple[str, ...] = ("fgsm", "pgd")

    def validate(self) -> None:
        """ValueError for bad settings, before any model or data is loaded."""
        if not self.analyses:
            raise ValueError(f"analyses must name at least one of {', '.join(ANALYSES)}, got "
                             "none.")
        for name in self.analyses:
            checks.check_choice(name, "analysis", ANALYSES)
        checks.check_positive_int(self.num_examples, "num_examples")
        checks.check_positive_int(self.num_samples, "num_samples", minimum=2)
        checks.check_positive_int(self.batch_size, "batch_size")
        for name in ("exp_steps", "exp_mc_samples", "pgd_steps", "pca_inputs",
                     "landscape_inputs", "power_iterations"):
            checks.check_positive_int(getattr(self, name), name)
        checks.check_positive_int(self.grid_size, "grid_size", minimum=2)
        checks.check_positive(self.landscape_span, "landscape_span")
        checks.check_non_negative(self.exp_entropy_weight, "exp_entropy_weight")
        checks.check_choice(self.landscape_plot, "landscape plot kind", plots.LANDSCAPE_KINDS)
        if self.epsilon is not None:
            checks.check_epsilon(self.epsilon)
        if not self.dataset.startswith(data_lib.NPZ_PREFIX):
            data_lib.dataset_info(self.dataset)
        needs_models = [a for a in self.analyses if a != "lambda" or self.lambda_table is None]
        if needs_models and not self.models:
            raise ValueError(f"The analyses {needs_models} need at least one model; got none "
                             "(pass .keras files or training workdirs).")
        for path in self.models:
            loading.resolve_model_path(path, self.checkpoint)
        if "lambda" in self.analyses:
            for name in self.lambda_attacks:
                get_attack(name)  # unknown -> ValueError listing the known ones
            if self.lambda_table is not None:
                lambda_study.read_trial_table(self.lambda_table)
            elif self.lambdas is not None and len(self.lambdas) != len(self.models):
                raise ValueError(f"Got {len(self.lambdas)} lambdas for {len(self.models)} "
                                 "models; give one lambda per model.")
            else:
                for i, path in enumerate(self.models):
                    lam = (self.lambdas[i] if self.lambdas is not None
                           else loading.entropy_weight_of(path))
                    if lam is None:
                        raise ValueError(f"No lambda known for model {path!r} (no entropy_weight "
                                         "in its run's config.json); give the lambdas or a "
                                         "trial table.")
                    checks.check_non_negative(lam, "lambda")




def _load_inputs(config: AnalysisConfig, classifiers: dict) -> tuple[np.ndarray, np.ndarray]:
    splits = data_lib.load(config.dataset, config.data_dir, max_test_examples=config.num_examples)
    x = data_lib.as_unit_float(splits.x_test)
    y = splits.y_test.astype(np.int32)
    for label, model in classifiers.items():
        expected = tuple(model.input_shape[1:])
        if any(e is not None and e != a for e, a in zip(expected, x.shape[1:])) or len(
                expected) != x.ndim - 1:
            raise ValueError(f"Model {label!r} takes inputs of shape {expected}, but "
                             f"{config.dataset} has images of shape {x.shape[1:]}.")
        outputs = int(model.output_shape[-1])
        if int(y.max()) >= outputs:
            raise ValueError(f"Model {label!r} returns {outputs} logits, but {config.dataset} "
                             f"has labels up to {int(y.max())}: analyse it on the dataset it "
                             "was trained on.")
    return x, y


def run_analyses(config: AnalysisConfig) -> dict[str, Any]:
    """Runs the configured analyses; writes <out>/<analysis>.json and PNGs, and
    <out>/summary.json; returns the summary."""
    config.validate()
    checks.check_writable_dir(config.out, "--out")
    labels = loading.model_labels(config.models) if config.models else []
    classifiers = {label: loading.load_classifier(path, config.checkpoint)
                   for label, path in zip(labels, config.models)}
    threat = resolve_threat(LinfBall.norm, config.epsilon, config.dataset)
    epsilon = threat.epsilon
    x, y = _load_inputs(config, classifiers) if classifiers else (None, None)
    verbose = bool(config.verbose)
    summary: dict[str, Any] = {"config": dataclasses.asdict(config), "epsilon": epsilon,
                               "models": dict(zip(labels, config.models)),
                               "num_inputs": None if x is None else len(x), "pictures": {}}

    def picture(key, pic):
        summary["pictures"][key] = {"path": pic.path, "width": pic.width, "height": pic.height}

    if "diversity" in config.analyses:
        results = {}
        for label, model in classifiers.items():
            if verbose:
                print(f"Diversity: {label}")
            result = diversity_analysis(
                model, x, y, threat, num_samples=config.num_samples,
                exp_steps=config.exp_steps, exp_mc_samples=config.exp_mc_samples,
                entropy_weight=config.exp_entropy_weight, pgd_steps=config.pgd_steps,
                batch_size=config.batch_size, num_projected=config.pca_inputs,
                seed=config.seed, verbose=verbose)
            results[label] = result.to_json()
            titles = [f"#{i}: EXP {e:.2f} / PGD {p:.2f}" for i, (e, p) in enumerate(
                zip(result.exp_distance, result.pgd_distance))]
            picture(f"diversity_{label}", plots.plot_diversity(
                result.projections, os.path.join(config.out, f"diversity_{label}.png"),
                titles=titles[:len(result.projections)],
                suptitle=f"{label}: EXP samples (o) and PGD restarts (x), first two PCs"))
        write_json(os.path.join(config.out, "diversity.json"), results)
        summary["diversity"] = {k: {m: v[m] for m in ("exp_mean_distance", "pgd_mean_distance",
                                                      "exp_fooling_rate", "pgd_fooling_rate")}
                                for k, v in results.items()}

    if "landscape" in config.analyses:
        rows = min(config.landscape_inputs, len(x))
        grids = {}
        for label, model in classifiers.items():
            if verbose:
                print(f"Loss landscape: {label}")
            grids[label] = loss_grid(model, x[:rows], y[:rows], epsilon,
                                     grid_size=config.grid_size, span=config.landscape_span,
                                     seed=config.seed, verbose=verbose)
        write_json(os.path.join(config.out, "landscape.json"),
                    {k: v.to_json() for k, v in grids.items()})
        picture("landscape", plots.plot_landscapes(
            grids, os.path.join(config.out, "landscape.png"), kind=config.landscape_plot))
        summary["landscape"] = {k: {"clean_loss": v.clean_losses.tolist(),
                                    "max_loss": v.losses.max(axis=(1, 2)).tolist()}
                                for k, v in grids.items()}

    if "curvature" in config.analyses:
        curv = {}
        for label, model in classifiers.items():
            if verbose:
                print(f"Curvature: {label}")
            curv[label] = curvature_analysis(model, x, y, iterations=config.power_iterations,
                                             batch_size=config.batch_size, seed=config.seed,
                                             verbose=verbose)
        write_json(os.path.join(config.out, "curvature.json"),
                    {k: v.to_json() for k, v in curv.items()})
        picture("curvature", plots.plot_curvature(curv, os.path.join(config.out,
                                                                     "curvature.png")))
        summary["curvature"] = {k: {"mean": v.mean, "std": v.std} for k, v in curv.items()}

    if "lambda" in config.analyses:
        if config.lambda_table is not None:
            points = lambda_study.read_trial_table(config.lambda_table)
            source = config.lambda_table
        else:
            lambdas = config.lambdas or [loading.entropy_weight_of(p) for p in config.models]
            points = lambda_study.evaluate_lambda_models(
                list(classifiers.values()), lambdas, x, y, epsilon,
                attacks=config.lambda_attacks, entropy_steps=config.exp_steps,
                entropy_mc_samples=config.exp_mc_samples, batch_size=config.batch_size,
                labels=labels, seed=config.seed, verbose=verbose)
            source = "models"
        payload = {"source": source, "points": [p.to_json() for p in points]}
        write_json(os.path.join(config.out, "lambda_study.json"), payload)
        picture("lambda_study", plots.plot_lambda_study(
            points, os.path.join(config.out, "lambda_study.png")))
        summary["lambda"] = payload

    write_json(os.path.join(config.out, "summary.json"), summary)
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """A few lines for the terminal."""
    inputs = (f"{summary['num_inputs']} test inputs of {summary['config']['dataset']}"
              if summary["num_inputs"] is not None else "no models")
    lines = [f"adt-analyze: {inputs}, {describe_budget(LinfBall.norm, summary['epsilon'])}"]
    for label, d in summary.get("diversity", {}).items():
        lines.append(f"  diversity  {label}: average pairwise L2, EXP {d['exp_mean_distance']:.3f}"
                     f" vs PGD {d['pgd_mean_distance']:.3f} (fooling rate EXP "
                     f"{100 * d['exp_fooling_rate']:.1f}%, PGD {100 * d['pgd_fooling_rate']:.1f}%)")
    for label, d in summary.get("landscape", {}).items():
        lines.append(f"  landscape  {label}: clean loss {np.mean(d['clean_loss']):.3f}, "
                     f"max on the grid {np.max(d['max_loss']):.3f}")
    for label, d in summary.get("curvature", {}).items():
        lines.append(f"  curvature  {label}: dominant Hessian eigenvalue {d['mean']:.4g} "
                     f"+- {d['std']:.3g}")
    for p in summary.get("lambda", {}).get("points", []):
        robust = ", ".join(f"{k} {100 * v:.1f}%" for k, v in p["robust_accuracy"].items())
        clean = "n/a" if p["clean_accuracy"] is None else f"{100 * p['clean_accuracy']:.1f}%"
        entropy = "n/a" if p["entropy"] is None else f"{p['entropy']:.3f}"
        lines.append(f"  lambda {p['lambda']:g} ({p['label']}): "
                     f"clean {clean}, {robust}, entropy {entropy}")
    for key, pic in summary["pictures"].items():
        lines.append(f"  {key}: {pic['path']} ({pic['width']}x{pic['height']})")
    return "\n".join(lines)


__all__ = ["ANALYSES", "AnalysisConfig", "format_summary", "run_analyses"]
