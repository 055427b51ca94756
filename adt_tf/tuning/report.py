"""The results of a hyperparameter search: a table of trials (Markdown, CSV, JSON), the best
trial, and a plot of robust accuracy and entropy against lambda like Fig. 5 of the ADT paper.

Example:
    >>> rows = trial_rows(tuner.oracle)
    >>> print(markdown_table(rows, ["entropy_weight"]))
    >>> plot_trials(rows, "entropy_weight", "search.png")

Reference:
    Dong et al., "Adversarial Distributional Training for Robust Deep Learning",
    NeurIPS 2020, Sec. 5.3 and Fig. 5.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Sequence
from typing import Any

import keras_tuner as kt

from adt_tf.core.files import write_json, write_text
from adt_tf.tuning.callbacks import CLEAN_NAME, ENTROPY_NAME, OBJECTIVE_NAME

METRIC_COLUMNS = (CLEAN_NAME, OBJECTIVE_NAME, ENTROPY_NAME)
HEADERS = {CLEAN_NAME: "clean acc", OBJECTIVE_NAME: "robust acc", ENTROPY_NAME: "mean entropy",
           "entropy_weight": "lambda", "trial_id": "trial", "best_epoch": "epoch"}


def _metric(trial: kt.engine.trial.Trial, name: str) -> float | None:
    if not trial.metrics.exists(name):
        return None
    value = trial.metrics.get_last_value(name)
    return None if value is None else float(value)


def trial_rows(oracle: kt.Oracle) -> list[dict[str, Any]]:
    """One row per trial, in the order they were created.

    Each row holds `trial_id`, `status`, the hyperparameter values (keras-tuner's own
    `tuner/...` bookkeeping left out), the validation clean and robust accuracy and the mean
    entropy of the best epoch (None where a trial has no such value), `best_epoch` (counted
    from 1) and, for hyperband, `epochs` (the trial's budget).
    """
    order = [t for t in getattr(oracle, "start_order", []) if t in oracle.trials]
    order += [t for t in oracle.trials if t not in order]
    rows = []
    for trial_id in order:
        trial = oracle.trials[trial_id]
        values = trial.hyperparameters.values
        row: dict[str, Any] = {"trial_id": trial_id, "status": str(trial.status)}
        row.update({k: v for k, v in values.items() if not k.startswith("tuner/")})
        if "tuner/epochs" in values:  # hyperband: the epoch budget of this trial
            row["epochs"] = int(values["tuner/epochs"])
        for name in METRIC_COLUMNS:
            row[name] = _metric(trial, name)
        # best_step counts the epochs of this fit; a hyperband trial may go on from the
        # weights of an earlier one, at epoch tuner/initial_epoch.
        start = int(values.get("tuner/initial_epoch", 0))
        row["best_epoch"] = None if trial.best_step is None else start + int(trial.best_step) + 1
        rows.append(row)
    return rows


def best_row(rows: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The best completed row, or None if no trial completed.

    Best means the highest validation robust accuracy; ties go to the higher clean
    accuracy, then to the earlier trial. (keras-tuner's own `get_best_trials` breaks ties
    by the order in which it happens to hold the trials, which changes when a search is
    reloaded.)
    """
    done = [(i, r) for i, r in enumerate(rows)
            if r["status"] == "COMPLETED" and r[OBJECTIVE_NAME] is not None]
    if not done:
        return None
    return min(done, key=lambda ir: (-ir[1][OBJECTIVE_NAME], -(ir[1][CLEAN_NAME] or 0.0),
                                     ir[0]))[1]


def columns(rows: Sequence[dict[str, Any]]) -> list[str]:
    """Column order: trial, status, hyperparameters, metrics, epoch."""
    fixed = ["trial_id", "status", *METRIC_COLUMNS, "best_epoch"]
    hps = []
    for row in rows:
        hps += [k for k in row if k not in fixed and k not in hps]
    return ["trial_id", "status", *hps, *METRIC_COLUMNS, "best_epoch"]


def _format(value: Any, name: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    if name in (CLEAN_NAME, OBJECTIVE_NAME):
        return f"{100 * value:.2f}%"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """The trials as a Markdown table (accuracies in percent)."""
    cols = columns(rows)
    lines = ["| " + " | ".join(HEADERS.get(c, c) for c in cols) + " |",
             "|" + "|".join("---" for _ in cols) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(_format(row.get(c), c) for c in cols) + " |")
    return "\n".join(lines)


def write_tables(rows: Sequence[dict[str, Any]], directory: str, stem: str = "trials"
                 ) -> dict[str, str]:
    """Writes <stem>.md, <stem>.csv and <stem>.json in `directory`; returns their paths."""
    os.makedirs(directory, exist_ok=True)
    paths = {ext: os.path.join(directory, f"{stem}.{ext}") for ext in ("md", "csv", "json")}
    write_text(paths["md"], markdown_table(rows) + "\n")
    cols = columns(rows)
    table = io.StringIO(newline="")
    writer = csv.DictWriter(table, fieldnames=cols)
    writer.writeheader()
    writer.writerows([{c: row.get(c) for c in cols} for row in rows])
    write_text(paths["csv"], table.getvalue())
    write_json(paths["json"], list(rows))
    return paths


def _label(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def plot_trials(rows: Sequence[dict[str, Any]], knob: str | None, path: str,
                title: str = "") -> str:
    """Plots validation robust (and clean) accuracy and the mean entropy against `knob`.

    The x axis is categorical, one tick per distinct value in increasing order (lambda = 0
    is a choice, so a log axis cannot hold it); each completed trial is a point and a line
    joins the mean per value, as in Fig. 5 of the paper. With no knob, the x axis is the
    trial. Writes a PNG at `path` and returns it.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "COMPLETED" and r[OBJECTIVE_NAME] is not None]
    key = knob if knob is not None else "trial_id"
    values = sorted({r.get(key) for r in done if r.get(key) is not None},
                    key=lambda v: (isinstance(v, str), v))
    position = {v: i for i, v in enumerate(values)}

    fig, (ax_acc, ax_ent) = plt.subplots(1, 2, figsize=(10, 4))
    panels = ((ax_acc, OBJECTIVE_NAME, "robust (PGD)", "o-"),
              (ax_acc, CLEAN_NAME, "clean", "s--"),
              (ax_ent, ENTROPY_NAME, "entropy", "o-"))
    for ax, metric, label, style in panels:
        points = [(position[r[key]], r[metric]) for r in done
                  if r.get(key) in position and r.get(metric) is not None]
        if not points:
            continue
        scale = 100.0 if metric != ENTROPY_NAME else 1.0
        ax.scatter([p for p, _ in points], [scale * v for _, v in points], alpha=0.4, s=16)
        means = {}
        for p, v in points:
            means.setdefault(p, []).append(scale * v)
        xs = sorted(means)
        ax.plot(xs, [sum(means[x]) / len(means[x]) for x in xs], style, label=label)
    for ax in (ax_acc, ax_ent):
        ax.set_xticks(range(len(values)), [_label(v) for v in values])
        ax.set_xlabel(HEADERS.get(key, key) if knob != "entropy_weight" else "lambda")
        ax.grid(alpha=0.3)
    ax_acc.set_ylabel("validation accuracy (%)")
    if ax_acc.lines:
        ax_acc.legend()
    ax_ent.set_ylabel("mean entropy estimate")
    if not ax_ent.lines:
        ax_ent.text(0.5, 0.5, "this method reports no entropy", ha="center",
                    transform=ax_ent.transAxes)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


__all__ = ["best_row", "columns", "markdown_table", "plot_trials", "trial_rows",
           "write_tables"]
