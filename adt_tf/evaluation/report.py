"""The result of a robustness evaluation: a dataclass that writes JSON and a Markdown table."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import numpy as np

from adt_tf.core.files import write_text
from adt_tf.threat import THREATS, LinfBall


def format_radius(epsilon: float, norm: str) -> str:
    """A radius as reports print it: "8/255" for L-infinity, "0.5" otherwise."""
    return f"{epsilon * 255:.3g}/255" if norm == LinfBall.norm else f"{epsilon:.3g}"


def describe_budget(norm: str, epsilon: float) -> str:
    """A budget as reports print it: "L-infinity epsilon = 0.031373 (8/255)", "L2 epsilon =
    0.5"."""
    text = f"{THREATS[norm].title} epsilon = {epsilon:.5g}"
    return text + (f" ({format_radius(epsilon, norm)})" if norm == LinfBall.norm else "")



EVALUATED_ON = {
    "clean_correct": "every clean-correct input (its own accuracy)",
    "still_robust": "only inputs robust to every earlier attack",
}


@dataclasses.dataclass
class AttackResult:
    """One attack of an evaluation.

    Attributes:
        name: catalogue name ("pgd20"); label: report name ("PGD-20"); attack: registry name.
        kind: "white-box", "black-box", "transfer" or "distributional".
        params: every setting the attack ran with (epsilon and seed included).
        evaluated_on: "clean_correct" (run on every clean-correct input: `accuracy` is the
            attack's own robust accuracy) or "still_robust" (run only on inputs that survived
            every earlier attack: its own accuracy was not measured and `accuracy` is None).
        num_attacked: inputs the attack was run on.
        num_broken: of those, how many it broke.
        accuracy: its own robust accuracy over all inputs (misclassified clean inputs count as
            broken), or None when it ran on survivors only.
        robust_after: the worst-case accuracy over this and every earlier attack.
        seconds: wall time of the attack (of the run that computed it, when `cached`).
        cached: True when the per-example results were read from the cache of an earlier run.
        skipped: why the attack did not run (then it does not enter the worst case), or None.
    """

    name: str
    label: str
    attack: str
    kind: str
    params: dict[str, Any]
    evaluated_on: str
    num_attacked: int = 0
    num_broken: int = 0
    accuracy: float | None = None
    robust_after: float | None = None
    seconds: float = 0.0
    cached: bool = False
    skipped: str | None = None


@dataclasses.dataclass
class EvaluationResult:
    """A robustness evaluation of one classifier.

    Attributes:
        model: what was evaluated (a path or a name). dataset: its data source.
        num_examples: N, the inputs evaluated. epsilon: the budget, the radius of the ball
            of norm `norm` ("linf" or "l2").
        suite: the suite name (or list of attacks). per_attack: "all" or "remaining".
        seed, batch_size: the run's settings.
        clean_accuracy: accuracy on clean inputs.
        robust_accuracy: the per-example worst case over every attack that ran (paper Eq. 12:
            an input counts only if it is classified correctly clean and under every attack).
        attacks: one `AttackResult` per attack of the suite, in order.
        warnings: the sanity checks' findings (empty when none fired).
        sanity: the checks' measurements (gradient statistics, the epsilon sweep, ...);
            {"skipped": True} when they were not run.
        seconds: total wall time of the call that made this result (attacks read from the
            cache of an earlier run count nothing here; see `cached_seconds`).
        environment: versions and the machine.
        per_example: {"clean": bool [N], attack name: bool [N] correct under it, "robust":
            bool [N]}; written to an .npz next to the JSON, not into it.
        compute_dtype: what the attacked classifier computed in ("float32", "bfloat16",
            "float16", or "as exported" for a SavedModel signature).
    """

    model: str
    dataset: str
    num_examples: int
    epsilon: float
    suite: str
    per_attack: str
    seed: int
    batch_size: int
    clean_accuracy: float
    robust_accuracy: float
    attacks: list[AttackResult]
    warnings: list[str] = dataclasses.field(default_factory=list)
    sanity: dict[str, Any] = dataclasses.field(default_factory=dict)
    seconds: float = 0.0
    environment: dict[str, Any] = dataclasses.field(default_factory=dict)
    per_example: dict[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False)
    norm: str = "linf"
    compute_dtype: str = "float32"

    @property
    def cached_seconds(self) -> float:
        """The time the attacks taken from the cache took when they ran (0 when none were)."""
        return float(sum(a.seconds for a in self.attacks if a.cached))

    def attack(self, name: str) -> AttackResult:
        for result in self.attacks:
            if result.name == name:
                return result
        raise KeyError(f"No attack {name!r} in this result; it has "
                       f"{', '.join(a.name for a in self.attacks)}.")

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data.pop("per_example")
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, default=_json_default)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvaluationResult:
        data = dict(data)
        data["attacks"] = [AttackResult(**a) for a in data["attacks"]]
        return cls(**data)

    def to_markdown(self) -> str:
        budget = describe_budget(self.norm, self.epsilon)
        lines = [
            f"# Robustness of `{self.model}`",
            "",
            f"Dataset `{self.dataset}`, {self.num_examples} inputs, {budget}, "
            f"suite `{self.suite}`, seed {self.seed}, "
            f"batch size {self.batch_size}, total time {self.seconds:.1f} s"
            + (f" (this run; the attacks read from the cache took {self.cached_seconds:.1f} s "
               "more when they ran)." if self.cached_seconds else "."),
            "",
            f"- Computed in: {self.compute_dtype}"
            + (" (the model's saved mixed-precision policy, `--compute_dtype=policy`)"
               if self.compute_dtype in ("float16", "bfloat16") else
               " (a SavedModel signature computes as it was exported)"
               if self.compute_dtype == "as exported" else ""),
            f"- Clean accuracy: **{_pct(self.clean_accuracy)}**",
            f"- Robust accuracy, per-example worst case over the attacks that ran: "
            f"**{_pct(self.robust_accuracy)}**",
            f"- Per-attack mode `{self.per_attack}`: each attack ran on "
            + (EVALUATED_ON["clean_correct"] if self.per_attack == "all"
               else EVALUATED_ON["still_robust"]) + ".",
            "",
            "| attack | kind | settings | run on | inputs attacked | broken | accuracy "
            "| worst case so far | time (s) |",
            "|---|---|---|---|---:|---:|---:|---:|---:|",
        ]
        for a in self.attacks:
            if a.skipped:
                lines.append(f"| {a.label} | {a.kind} | {_settings(a.params)} | skipped: "
                             f"{a.skipped} | - | - | - | - | - |")
                continue
            run_on = "clean-correct" if a.evaluated_on == "clean_correct" else "still robust"
            acc = _pct(a.accuracy) if a.accuracy is not None else "not measured (survivors)"
            time = f"{a.seconds:.1f}" + (" (cached)" if a.cached else "")
            lines.append(f"| {a.label} | {a.kind} | {_settings(a.params)} | {run_on} | "
                         f"{a.num_attacked} | {a.num_broken} | {acc} | {_pct(a.robust_after)} "
                         f"| {time} |")
        lines += ["", "## Sanity checks", ""]
        if self.sanity.get("skipped"):
            lines.append("- Not run (`--sanity_checks=false`): nothing here says whether the "
                         "gradients are masked.")
        elif self.warnings:
            lines += [f"- WARNING: {w}" for w in self.warnings]
        else:
            lines.append("- No warning: logits (not probabilities), finite non-zero gradients "
                         "at APGD's start, deterministic model, accuracy falls with epsilon and "
                         "reaches 0 with an unbounded budget, no black-box attack stronger than "
                         "the white-box ones.")
        sweep = self.sanity.get("epsilon_sweep")
        if sweep:
            lines += ["", "Epsilon sweep (" + sweep.get("attack", "PGD") + f", "
                      f"{sweep.get('num_inputs')} inputs): "
                      + ", ".join(f"{format_radius(e, self.norm)}: {_pct(a)}"
                                  for e, a in zip(sweep["epsilons"], sweep["accuracy"]))]
        unbounded = self.sanity.get("unbounded")
        if unbounded:
            lines += ["", f"Unbounded budget ({unbounded['attack']}, epsilon = 1, "
                      f"{unbounded['num_inputs']} inputs): {_pct(unbounded['accuracy'])}."]
        return "\n".join(lines) + "\n"

    def save(self, out_dir: str, stem: str = "robustness") -> dict[str, str]:
        """Writes <stem>.json, <stem>.md and <stem>_per_example.npz into out_dir."""
        os.makedirs(out_dir, exist_ok=True)
        paths = {ext: os.path.join(out_dir, f"{stem}{suffix}") for ext, suffix in
                 (("json", ".json"), ("md", ".md"), ("npz", "_per_example.npz"))}
        write_text(paths["json"], self.to_json())
        write_text(paths["md"], self.to_markdown())
        if self.per_example:
            np.savez_compressed(paths["npz"], **self.per_example)
        return paths




def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}%"


def _settings(params: dict[str, Any]) -> str:
    shown = {k: v for k, v in params.items() if k != "epsilon"}
    text = ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                     for k, v in sorted(shown.items()))
    return text.replace("|", "/") or "-"


__all__ = ["AttackResult", "EVALUATED_ON", "EvaluationResult", "describe_budget",
           "format_radius"]
