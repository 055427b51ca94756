"""The training methods the benchmarks compare, by key: a registered method with its settings
beyond the defaults (the one list every benchmark takes its rows from)."""

from __future__ import annotations

from typing import Any, NamedTuple


class Variant(NamedTuple):
    key: str
    label: str
    method: str
    params: dict[str, Any]


VARIANTS: dict[str, Variant] = {v.key: v for v in (
    Variant("standard", "Standard", "standard", {}),
    Variant("pgd_at", "AT_PGD", "pgd_at", {}),
    Variant("trades", "TRADES", "trades", {}),
    Variant("adt_exp", "ADT_EXP", "adt_exp", {}),
    Variant("adt_exp_fresh", "ADT_EXP, fresh inner gradients (ablation)", "adt_exp",
            {"inner_gradients": "fresh"}),
    Variant("adt_exp_trades", "ADT_EXP (TRADES loss)", "adt_exp", {"outer_loss": "trades"}),
    Variant("adt_exp_am", "ADT_EXP-AM", "adt_exp_am", {}),
    Variant("adt_imp_am", "ADT_IMP-AM", "adt_imp_am", {}),
    Variant("awp_at", "AWP-AT", "awp_at", {}),
    Variant("adt_exp_lowrank", "ADT_EXP, low-rank Gaussian (R = 8)", "adt_exp",
            {"family": "lowrank", "rank": 8}),
    Variant("adt_exp_matrix_normal", "ADT_EXP, matrix-normal Gaussian", "adt_exp",
            {"family": "matrix_normal"}),
    Variant("adt_exp_coupling", "ADT_EXP, coupling flow (H = 8)", "adt_exp",
            {"family": "coupling", "rank": 8}),
    # bench.am_probe's: the amortised methods with a larger step or a wider generator.
    Variant("adt_exp_am_lr1e3", "ADT_EXP-AM, generator lr 1e-3", "adt_exp_am",
            {"generator_lr": 1e-3}),
    Variant("adt_exp_am_w64", "ADT_EXP-AM, generator width 64", "adt_exp_am",
            {"generator_width": 64}),
    Variant("adt_imp_am_lr1e3", "ADT_IMP-AM, generator and encoder lr 1e-3", "adt_imp_am",
            {"generator_lr": 1e-3, "encoder_lr": 1e-3}),
)}


def variant(key: str) -> Variant:
    """The variant of `key`; ValueError listing the known ones."""
    if key not in VARIANTS:
        raise ValueError(f"Unknown method {key!r}; known: {', '.join(VARIANTS)}.")
    return VARIANTS[key]


__all__ = ["VARIANTS", "Variant", "variant"]
