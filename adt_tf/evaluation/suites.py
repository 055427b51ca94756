"""Named attack suites: which attacks an evaluation runs, in which order, with which settings.

An `AttackSpec` is plain data (an attack's registry name and its keyword arguments), so a
suite is recorded in full in every result. `CATALOGUE` holds every named attack setting; the
suites are ordered lists of catalogue names:

- `quick`: PGD-20.
- `paper`: the ADT paper's battery (Sec. 5): FGSM, PGD-20, PGD-100, MIM-20, C&W, FeaAttack,
  SPSA, transfer PGD-20 and MIM-20 (when a source model is given), and the distributional
  EXP, EXP-AM and IMP-AM; FeaAttack and SPSA with the settings of the authors' scripts.
- `autoattack`: AutoAttack's standard order (Croce & Hein, 2020): APGD-CE, APGD-T (9 targets),
  FAB-T (9 targets), Square (5000 queries).
- `full`: paper, the stronger FeaAttack and SPSA variants (`fea_distinct`: 200 distinct
  targets from the clean input; `spsa512`: 256 directions, 512 queries per estimate, from a
  random start), then autoattack.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import re
from typing import Any

from adt_tf.attacks import ATTACKS, attacks_for, get_attack
from adt_tf.core import checks
from adt_tf.threat import Ball, L2Ball, LinfBall

KINDS = ("white-box", "black-box", "transfer", "distributional")
#: What an attack may need from the evaluation besides (classifier, x, y, epsilon).
NEEDS = ("source_model", "penultimate", "target_pool", "adversary")

# Arguments that the evaluation supplies itself; they cannot be overridden by name
# (`training`: an evaluation always attacks the classifier in inference mode).
_SUPPLIED = ("classifier", "x", "y", "epsilon", "seed", "source", "target_images",
             "target_labels", "adversary", "training")
_COUNTS = ("steps", "restarts", "num_queries", "samples", "num_targets", "check_samples",
           "sample_chunk", "train_steps", "train_batch_size", "generator_width")
_SIZES = ("step_size", "lr", "perturbation")


@dataclasses.dataclass(frozen=True)
class AttackSpec:
    """One attack of a suite, as plain data.

    Attributes:
        name: unique name in the catalogue (e.g. "pgd20"), used for overrides and the cache.
        attack: the registry name of the attack function (e.g. "pgd").
        params: its keyword arguments (JSON-serialisable), epsilon and seed excluded.
        kind: "white-box", "black-box", "transfer" or "distributional".
        label: how the report names it, a format string of the parameters (e.g.
            "PGD-{steps}"); `display_label` fills it in.
        needs: what it needs from the evaluation ("source_model", "penultimate",
            "target_pool", "adversary": a generator fitted before the attack).
    """

    name: str
    attack: str
    params: dict[str, Any]
    kind: str
    label: str
    needs: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "attack": self.attack, "params": dict(self.params),
                "kind": self.kind, "label": self.label, "needs": list(self.needs)}

    def with_params(self, **params) -> AttackSpec:
        """A copy with some parameters replaced (checked against the attack's signature).
        Text is typed by the parameter it sets, as the command line reads settings
        everywhere: true/false/1/0 (any case) for a switch, a number or a fraction a/b for a
        number."""
        merged = dict(self.params)
        signature = inspect.signature(get_attack(self.attack)).parameters
        merged.update({key: _typed(value, signature.get(key), f"{self.name}.{key}")
                       for key, value in params.items()})
        spec = dataclasses.replace(self, params=merged)
        spec.validate()
        return spec

    def validate(self) -> None:
        """ValueError if a parameter is unknown to the attack or out of range."""
        checks.check_choice(self.kind, "attack kind", KINDS)
        function = get_attack(self.attack)
        signature = inspect.signature(function).parameters
        accepts_any = any(p.kind is p.VAR_KEYWORD for p in signature.values())
        for key, value in self.params.items():
            if key in _SUPPLIED:
                raise ValueError(f"{self.name}: {key!r} is set by the evaluation, not a "
                                 "parameter.")
            if key not in signature and not accepts_any:
                known = sorted(k for k in signature if k not in _SUPPLIED)
                raise ValueError(f"{self.name}: unknown parameter {key!r} of attack "
                                 f"{self.attack!r}; known: {', '.join(known)}.")
            if key in signature:
                _check_type(value, signature[key], f"{self.name}.{key}")
            if key in _COUNTS:
                checks.check_positive_int(value, f"{self.name}.{key}")
            elif key in _SIZES and value is not None:
                checks.check_positive(value, f"{self.name}.{key}")
        try:
            json.dumps(self.params)
        except TypeError:
            raise ValueError(f"{self.name}: parameters must be plain data, got "
                             f"{self.params!r}.") from None

    @property
    def display_label(self) -> str:
        """The label with the parameters filled in ("PGD-20")."""
        return self.label.format(**self.params)

    def describe(self) -> str:
        """The settings as one line, e.g. "steps=20, restarts=1"."""
        return ", ".join(f"{k}={_short(v)}" for k, v in sorted(self.params.items())) or "-"


def _expected_type(parameter: inspect.Parameter) -> str | None:
    """"bool", "number" or "str": what a parameter takes, from its default or, when that is
    None, its annotation; None when neither tells."""
    default = parameter.default
    if isinstance(default, bool):
        return "bool"
    if isinstance(default, (int, float)):
        return "number"
    if isinstance(default, str):
        return "str"
    annotation = str(parameter.annotation)
    for word, kind in (("bool", "bool"), ("float", "number"), ("int", "number"),
                       ("str", "str")):
        if re.search(rf"\b{word}\b", annotation):
            return kind
    return None


def _typed(value: Any, parameter: inspect.Parameter | None, name: str) -> Any:
    """An override's value as its parameter takes it: "False" or 0 for a switch is False,
    "8/255" for a number is 8/255 (the readings of `adt_tf.core.checks`); anything else is
    left for `_check_type` to judge."""
    if parameter is None:
        return value
    kind = _expected_type(parameter)
    if kind == "bool" and (isinstance(value, str) or value in (0, 1)):
        return checks.parse_bool(value, name)
    if kind == "number" and isinstance(value, str) and value.strip().lower() not in (
            "none", "null"):
        whole = isinstance(parameter.default, int) and not isinstance(parameter.default, bool)
        return checks.parse_number(value, name, int if whole else float)
    return value


def _check_type(value: Any, parameter: inspect.Parameter, name: str) -> None:
    """ValueError naming the parameter when an override has the wrong type (e.g. "abc" for
    a number of steps); None stays allowed where the default is None."""
    kind = _expected_type(parameter)
    if value is None and parameter.default is None:
        return
    ok = {"bool": lambda v: isinstance(v, bool),
          "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
          "str": lambda v: isinstance(v, str),
          None: lambda v: True}[kind](value)
    if not ok:
        words = {"bool": "true or false", "number": "a number", "str": "a string"}[kind]
        raise ValueError(f"{name} must be {words}, got {value!r}.")


def _short(value):
    if isinstance(value, float):
        return f"{value:.4g}"
    return value


# The amortised attacks: a generator trained against the fixed model (on the evaluation's
# training pool), then sampled.
_AM = {"train_steps": 500, "train_batch_size": 64, "generator_width": 16, "check_samples": 10}


def _catalogue() -> dict[str, AttackSpec]:
    specs = [
        AttackSpec("fgsm", "fgsm", {}, "white-box", "FGSM"),
        AttackSpec("pgd20", "pgd", {"steps": 20, "restarts": 1, "random_start": True},
                   "white-box", "PGD-{steps}"),
        AttackSpec("pgd100", "pgd", {"steps": 100, "restarts": 1, "random_start": True},
                   "white-box", "PGD-{steps}"),
        AttackSpec("mim20", "mim", {"steps": 20, "momentum": 1.0, "random_start": True},
                   "white-box", "MIM-{steps}"),
        AttackSpec("cw30", "cw", {"steps": 30}, "white-box", "C&W (margin, PGD-{steps})"),
        # The ADT authors' feature_attack.py: 200 targets drawn with replacement from the
        # test split, a random start each.
        AttackSpec("fea", "fea", {"steps": 50, "step_size": 1 / 255, "num_targets": 200,
                                  "random_start": True, "with_replacement": True},
                   "white-box", "FeaAttack ({num_targets} targets)",
                   ("penultimate", "target_pool")),
        # Ours, kept beside it in `full`: 200 distinct targets, each from the clean input.
        AttackSpec("fea_distinct", "fea", {"steps": 50, "step_size": 1 / 255,
                                           "num_targets": 200, "random_start": False,
                                           "with_replacement": False},
                   "white-box", "FeaAttack ({num_targets} distinct targets)",
                   ("penultimate", "target_pool")),
        # The ADT authors' spsa.py: samples_per_draw=256 evaluations = 128 +- pairs, from x.
        AttackSpec("spsa", "spsa", {"steps": 100, "perturbation": 0.001, "lr": 0.01,
                                    "samples": 128, "random_start": False,
                                    "clip_queries": False},
                   "black-box", "SPSA (2x{samples} queries per estimate)"),
        # Ours, kept beside it in `full`: twice the queries, from a uniform random start.
        AttackSpec("spsa512", "spsa", {"steps": 100, "perturbation": 0.001, "lr": 0.01,
                                       "samples": 256, "random_start": True,
                                       "clip_queries": True},
                   "black-box", "SPSA (2x{samples} queries, random start)"),
        AttackSpec("transfer_pgd20", "transfer", {"attack": "pgd", "steps": 20},
                   "transfer", "Transfer PGD-{steps}", ("source_model",)),
        AttackSpec("transfer_mim20", "transfer",
                   {"attack": "mim", "steps": 20, "random_start": True},
                   "transfer", "Transfer MIM-{steps}", ("source_model",)),
        AttackSpec("exp", "exp", {"steps": 20, "samples": 10, "check_samples": 10},
                   "distributional", "EXP (T={steps}, k={samples})"),
        AttackSpec("exp_am", "exp_am", _AM, "distributional",
                   "EXP-AM ({train_steps} generator steps)", ("adversary",)),
        AttackSpec("imp_am", "imp_am", _AM, "distributional",
                   "IMP-AM ({train_steps} generator steps)", ("adversary",)),
        AttackSpec("apgd_ce", "apgd", {"steps": 100, "loss": "ce", "restarts": 1},
                   "white-box", "APGD-CE"),
        AttackSpec("apgd_dlr", "apgd", {"steps": 100, "loss": "dlr", "restarts": 1},
                   "white-box", "APGD-DLR"),
        AttackSpec("apgd_t", "apgd_t", {"steps": 100, "num_targets": 9, "restarts": 1},
                   "white-box", "APGD-T ({num_targets} targets)"),
        AttackSpec("fab_t", "fab_t", {"steps": 100, "num_targets": 9, "restarts": 1},
                   "white-box", "FAB-T ({num_targets} targets)"),
        AttackSpec("square", "square", {"num_queries": 5000, "p_init": 0.8}, "black-box",
                   "Square ({num_queries} queries)"),
    ]
    return {spec.name: spec for spec in specs}


CATALOGUE: dict[str, AttackSpec] = _catalogue()

SUITES: dict[str, tuple[str, ...]] = {
    "quick": ("pgd20",),
    "paper": ("fgsm", "pgd20", "pgd100", "mim20", "cw30", "fea", "spsa", "transfer_pgd20",
              "transfer_mim20", "exp", "exp_am", "imp_am"),
    "autoattack": ("apgd_ce", "apgd_t", "fab_t", "square"),
}
#: `full`: the paper's battery as the authors ran it, the stronger variants of FeaAttack and
#: SPSA that the evaluation keeps beside theirs, then AutoAttack.
SUITES["full"] = SUITES["paper"] + ("fea_distinct", "spsa512") + SUITES["autoattack"]
#: The paper's battery without the attacks that have no L2 version (FeaAttack, SPSA, the
#: amortised ones): the suite of `--norm=l2` beside `quick`.
SUITES["paper_l2"] = tuple(n for n in SUITES["paper"]
                          if CATALOGUE[n].attack in attacks_for(L2Ball.norm))

#: How each suite runs its attacks by default: "all" (each attack on every clean-correct
#: input, its own accuracy measured) or "remaining" (each on the inputs still robust).
DEFAULT_PER_ATTACK = {"quick": "all", "paper": "all", "autoattack": "remaining",
                      "full": "remaining", "paper_l2": "all"}


def resolve_suite(suite: str, overrides: dict[str, dict[str, Any]] | None = None,
                  threat: Ball | type[Ball] | None = None) -> list[AttackSpec]:
    """The specs of a suite name, or of a comma-separated list of catalogue names.

    Args:
        suite: "quick", "paper", "autoattack", "full", or e.g. "pgd20,apgd_ce,square".
        overrides: {catalogue name: {parameter: value}} applied on top (e.g.
            {"fea": {"num_targets": 20}}); a name that is not in the suite is an error.
        threat: the threat model, or its kind (`L2Ball`: only the norm matters here; None:
            the paper's L-infinity ball); every attack must be defined for its norm
            (`adt_tf.attacks.attacks_for`).

    Raises:
        ValueError: unknown suite or attack names (listing the known ones), unknown or
            out-of-range parameters.
    """
    if suite in SUITES:
        names = list(SUITES[suite])
    else:
        names = [n.strip() for n in str(suite).split(",") if n.strip()]
        unknown = [n for n in names if n not in CATALOGUE]
        if unknown or not names:
            raise ValueError(
                f"Unknown suite or attack {suite!r}; suites: {', '.join(sorted(SUITES))}; "
                f"attacks: {', '.join(CATALOGUE)}.")
        if len(set(names)) != len(names):
            raise ValueError(f"Attack names repeat in {suite!r}.")
    specs = [CATALOGUE[n] for n in names]
    for name, params in (overrides or {}).items():
        if name not in names:
            raise ValueError(f"Override for {name!r}, which is not in the suite {suite!r} "
                             f"({', '.join(names)}).")
        specs[names.index(name)] = specs[names.index(name)].with_params(**params)
    for spec in specs:
        spec.validate()
    norm = LinfBall.norm if threat is None else threat.norm
    usable_attacks = attacks_for(norm)
    missing = [spec.name for spec in specs if spec.attack not in usable_attacks]
    if missing:
        usable = [name for name, members in SUITES.items()
                  if all(CATALOGUE[m].attack in usable_attacks for m in members)]
        raise ValueError(f"The suite {suite!r} has attacks without an {norm} version "
                         f"({', '.join(missing)}); with norm={norm} use a suite of "
                         f"{', '.join(usable)} or a list of {', '.join(sorted(usable_attacks))}"
                         " attacks.")
    return specs


def parse_overrides(text: str | list[str] | None) -> dict[str, dict[str, Any]]:
    """Parses "fea.num_targets=20,spsa.samples=512" into {"fea": {"num_targets": 20}, ...}.

    Values are read as JSON when they parse (numbers, true/false, null), else as strings;
    `AttackSpec.with_params` then types them by the parameter they set ("False" for a switch,
    "2/255" for a step size), as every other flag reads them.
    """
    out: dict[str, dict[str, Any]] = {}
    example = "fea.num_targets=20"
    for key, value in checks.parse_assignments(text, "--attack_params", example).items():
        name, dot, param = key.partition(".")
        if not dot or not name or not param:
            raise ValueError(f"Attack parameter {key!r} must look like ATTACK.PARAM=VALUE "
                             f"(e.g. {example}).")
        out.setdefault(name, {})[param] = value
    return out


def known_attacks() -> list[str]:
    return list(CATALOGUE)


__all__ = ["ATTACKS", "CATALOGUE", "DEFAULT_PER_ATTACK", "SUITES", "AttackSpec",
           "known_attacks", "parse_overrides", "resolve_suite"]
