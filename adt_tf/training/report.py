"""A run's final report: clean and PGD-20 accuracy of the trained classifier (and of the best
checkpoint) on the test split, as `report.json` keeps it and `adt-train` prints it."""

from __future__ import annotations

from typing import Any

import keras

from adt_tf import data as data_lib
from adt_tf.evaluation import evaluate
from adt_tf.evaluation.report import describe_budget
from adt_tf.threat import Ball, LinfBall
from adt_tf.training.config import RunConfig


def evaluate_report(classifier: keras.Model, splits: data_lib.Splits, threat: Ball,
                    config: RunConfig) -> dict[str, Any]:
    """Clean and PGD-20 accuracy (step epsilon/4, random start) on the test split, with the
    classifier computing in float32 (a model trained under a mixed policy is attacked
    through its float32 copy, as `adt-evaluate` does by default)."""
    n = min(config.report.eval_examples or len(splits.x_test), len(splits.x_test))
    x, y = splits.x_test[:n], splits.y_test[:n]
    # The evaluation's own PGD-20 (the `quick` suite), with the run's seed: the report's
    # number is what `adt-evaluate --suite=quick --seed=<seed>` gives on the same inputs.
    result = evaluate(classifier, x, y, threat, suite="quick",
                      seed=config.run.seed,
                      batch_size=config.report.eval_batch_size, sanity_checks=False,
                      verbose=int(bool(config.run.verbose)))
    return {
        "dataset": config.data.dataset, "split": "test", "num_examples": int(n),
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


__all__ = ["evaluate_report", "format_report"]
