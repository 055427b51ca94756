"""The robustness benchmark's table: its Markdown (the recipe, the staged evaluation's
numbers per method, mean ± spread over the seeds, the verdict against AT_PGD, the attack
settings, the sanity checks' warnings), the raw numbers as JSON and a bar chart, from the
summaries of the finished runs (`bench.robustness` writes them)."""

from __future__ import annotations

import os

import numpy as np

from adt_tf.core.files import write_text
from bench.kit.recipes import Recipe, run_dir, run_seeds
from bench.kit.runs import DEFAULT_DATA, ROOT, collect_summaries, read_json, write_json
from bench.kit.stats import binomial_se, cell, compare_seeds, mean_spread
from bench.kit.variants import variant

#: The ADT variants the verdict compares with AT_PGD (the ablation is compared with ADT_EXP).
ADT_KEYS = ("adt_exp", "adt_exp_trades", "adt_exp_am", "adt_imp_am", "adt_exp_lowrank",
            "adt_exp_matrix_normal")
#: The richer base distributions (beyond the paper), compared with the diagonal ADT_EXP too.
FAMILY_KEYS = ("adt_exp_lowrank", "adt_exp_matrix_normal")
FAMILY_TEXT = (
    "The richer-distribution rows (beyond the paper, `adt_tf.adt.families`) are ADT_EXP with "
    "the same settings and another base distribution under the same Tanh o Scale map: "
    "low-rank, covariance diag(sigma^2) + U U^T with U of rank R = 8; matrix-normal, the image "
    "as an H x (W C) matrix with row and column factors; the extra factors start at zero "
    "(identity) and take inner Adam steps of 0.003 (the recorded sweep, "
    "`bench/results/family_sweep_cpu.md`)")


def collect(workdir: str, seeds: list[int], methods: list[str]) -> tuple[dict, list[str]]:
    """The finished runs' summaries, by (method, seed), and the names of those missing."""
    found, missing = collect_summaries({(key, seed): run_dir(workdir, key, seed)
                                        for key in methods for seed in seeds})
    return found, [f"{key}-seed{seed}" for key, seed in missing]


def further_seeds(workdir: str, seeds: list[int], methods: list[str]) -> dict:
    """The finished runs in `workdir` of `methods` with a seed beyond `seeds`, by (method,
    seed): a third seed run for some rows only (`bench.robustness --methods=KEY --seeds=2
    --all_seeds=0,1,2`, as the families' rule asks), which joins its row's mean and spread
    without making the other rows partial."""
    names = os.listdir(workdir) if os.path.isdir(workdir) else []
    return collect_summaries({(key, seed): run_dir(workdir, key, seed) for key in methods
                              for seed in run_seeds(names, key) if seed not in seeds})[0]


def verdict(found: dict, seeds: list[int], key: str, baseline: str = "pgd_at",
            metric: str = "a_rob_subset") -> str:
    """`key`'s seeds against AT_PGD's (`bench.kit.stats.compare_seeds`), on `metric`."""
    return compare_seeds([found[(key, s)][metric] for s in seeds if (key, s) in found],
                         [found[(baseline, s)][metric] for s in seeds if (baseline, s) in found],
                         "AT_PGD")


def family_line(found: dict, seeds: list[int], key: str, m: int, n: int) -> str:
    """A richer family's row against the diagonal ADT_EXP on both A_rob measures, and whether
    the issue's rule asks for a third seed (the row's mean differs from ADT_EXP's or AT_PGD's
    by more than one spread on either measure)."""
    parts, third = [], []
    for metric, what in (("a_rob_subset", f"A_rob (all, first {m})"),
                         ("a_rob_main", f"A_rob after stage 2 ({n} inputs)")):
        parts.append(f"{what} " + verdict(found, seeds, key, baseline="adt_exp",
                                          metric=metric).replace("AT_PGD", "ADT_EXP"))
        row = [found[(key, s)][metric] for s in seeds if (key, s) in found]
        for base in ("adt_exp", "pgd_at"):
            other = [found[(base, s)][metric] for s in seeds if (base, s) in found]
            if len(row) > 1 and len(other) > 1:
                (ma, sa), (mb, sb) = mean_spread(row), mean_spread(other)
                if abs(ma - mb) > max(sa, sb):
                    third.append(f"{variant(base).label} on {what}")
    done = sum((key, s) in found for s in seeds) >= 3
    rule = (f"it differs by more than one spread from {', '.join(sorted(set(third)))}: the "
            "issue's rule asks for a third seed"
            + (" (in the row)" if done else " (**not run yet**)") if third else
            "it differs from neither ADT_EXP nor AT_PGD by more than one spread (no third seed "
            "asked)")
    return (f"- {variant(key).label} against the diagonal ADT_EXP: {'; '.join(parts)}; "
            f"{rule}.")


def in_short(found: dict, seeds: list[int], keys: list[str]) -> str:
    """One sentence: which ADT variants beat AT_PGD beyond the seed spread, on both A_rob
    measures."""
    parts = []
    for metric, what in (("a_rob_subset", "A_rob (all attacks)"),
                         ("a_rob_main", "A_rob after stage 2")):
        verdicts = {k: verdict(found, seeds, k, metric=metric) for k in keys}
        if any(v == "not enough seeds to compare" for v in verdicts.values()):
            return "**In short:** not every run has two seeds yet; no verdict."
        winners = [variant(k).label for k, v in verdicts.items() if v.startswith("beats")]
        parts.append(f"on {what}, {', '.join(winners) if winners else 'no ADT variant'} "
                     "beats AT_PGD beyond the seed spread")
    return f"**In short:** at this scale, {parts[0]}; {parts[1]}."


def build_table(recipe: Recipe, scale: str, workdir: str, seeds: list[int], methods: list[str],
                output_dir: str, command: str, data: str = DEFAULT_DATA) -> str | None:
    """Writes robustness_cifar10_<scale>.md/.json/.png (+ _l2 under L2) from the finished runs
    in `workdir`; returns the Markdown path (None when no run has finished)."""
    from adt_tf.evaluation.staged import stage_attacks

    main_attacks, late_attacks, subset_attacks = stage_attacks(recipe.norm)
    l2 = recipe.norm == "l2"
    found, missing = collect(workdir, seeds, methods)
    if not found:
        print("No finished run to tabulate yet.")
        return None
    extra = further_seeds(workdir, seeds, methods)
    found.update(extra)
    base_seeds, seeds = seeds, sorted(set(seeds) | {s for _, s in extra})
    any_run = next(iter(found.values()))
    attack_labels = {name: info["label"] for name, info in any_run["attacks"].items()}
    env = any_run["environment"]
    cols = [a for a in main_attacks if not all(found[k]["attacks"].get(a, {}).get("skipped")
                                               for k in found)]
    n, m = any_run["num_examples"], any_run["subset_examples"]
    lines = [
        f"# Robustness on CIFAR-10, `{scale}` recipe" + (", L2 ball of radius 0.5" if l2 else ""),
        "",
    ]
    if missing:
        lines += [f"**Partial table**: {len(missing)} of {len(missing) + len(found)} runs are "
                  f"not finished yet ({', '.join(missing)}); the rerun of the same command "
                  "resumes them (bench/README.md).", ""]
    lines += [
        f"- Recipe (the same for every method): {recipe.describe()}. Each method's inner "
        "settings are the paper's (the defaults of `adt_tf.methods`): "
        + ("AT_PGD 10 steps of epsilon / 4 = 0.125 (normalised gradient) with a uniform "
           "start in the ball; TRADES beta 6, 10 steps of 0.125; ADT_EXP T = 7, k = 5, Adam lr "
           "0.3, lambda 0.01, the radial distribution onto the L2 ball "
           "(`adt_tf.threat.bijectors.RadialTanh`), "
           if l2 else "AT_PGD 10 steps of 2/255 with random start, trained on the last "
           "iterate (Madry et al.'s); TRADES beta 6, 10 steps of 0.007 from x + 0.001 N(0, I), "
           "three training-mode forwards per step (the reference's); ADT_EXP T = 7, k = 5, "
           "Adam lr 0.3, lambda 0.01, ")
        + "the inner gradients accumulated over the steps as in the "
        "authors' code (the ablation row: a fresh gradient per step instead); ADT_EXP "
        "(TRADES loss) the same with beta 6; ADT_EXP-AM lambda 0.01 and ADT_IMP-AM lambda 1, "
        "tau 0.9, with the reference's full-resolution generator at width "
        f"{recipe.generator_width} (the reference's is 256) and PyTorch's Adam (lr 2e-4)"
        + (f". {FAMILY_TEXT}" if any(k in methods for k in FAMILY_KEYS) else "") + ".",
        f"- Data: `{os.path.relpath(data, ROOT)}` "
        "(the offline CIFAR-10 copy: its training images in the original order, most of them "
        "decoded from a JPEG copy, so not pixel-exact CIFAR-10; the first 2,000 official "
        "test images, pixel-exact).",
        f"- Seeds: {', '.join(map(str, base_seeds))} (training and attacks)"
        + (f"; a further seed for {', '.join(sorted({variant(k).label for k, _ in extra}))} "
           f"(seed {', '.join(sorted({str(s) for _, s in extra}))}, its transfer source the "
           "next seed in turn)" if extra else "")
        + "; cells are mean ± spread over the seeds, spread = half the range (max - min) / 2, "
        "in percent.",
        f"- Test inputs: the first {n} test images. Stage 1: clean and each attack of the "
        "accuracy columns on every clean-correct input (the attack's own accuracy). Stage 2 "
        "(AutoAttack's way): APGD-T and FAB-T only on the inputs still robust after stage 1. "
        f"Stage 3: {', '.join(attack_labels.get(a, a) for a in subset_attacks)} (cost per "
        f"input) only on the inputs still robust after stages 1 and 2 among the first {m}.",
        f"- A_rob: per-example worst case (paper Eq. 12): after stage 1 ({n} inputs); after "
        f"stage 2 ({n} inputs, and the same restricted to the first {m}); **A_rob (all)**: "
        f"after stage 3, the whole "
        + ("suite (the `full` suite's attacks that have an L2 version: all but FeaAttack "
           "and SPSA; stages 1-3 hold the whole L2 AutoAttack, APGD-CE, APGD-T, FAB-T and "
           "Square)" if l2 else "`full` suite")
        + f", on the first {m} inputs.",
        f"- Why {n} and {m} inputs: on one thread, per robust model, the EXP-AM and IMP-AM "
        "generator fits, APGD-T, FAB-T, FeaAttack and SPSA cost minutes each, and the recipe "
        "has to fit a few hours on 2 cores.",
        f"- {recipe.epsilon_text[0].upper() + recipe.epsilon_text[1:]}; every attack with the "
        "evaluation's own settings "
        "(`adt_tf.evaluation.suites.CATALOGUE`), listed below the table. Transfer attacks: "
        "crafted on "
        "the same method trained with the other seed (an independently trained copy).",
        f"- Machine: {env.get('cpu')}, {env.get('cpu_count')} cores, GPUs: "
        f"{env.get('gpus') or 'none'}; TensorFlow {env.get('tensorflow')}, Keras "
        f"{env.get('keras')}; adt_tf {env.get('adt_tf')}. Times are wall-clock per run (the "
        "CPU recipe ran one single-threaded process per seed, side by side).",
        "",
        "| method | seeds | clean (%) | " + " | ".join(attack_labels[a] for a in cols)
        + f" | A_rob stage 1 ({n}) | A_rob stage 2 ({n}) | stage 2 on first {m} "
        f"| **A_rob (all), first {m}** | train (min) | eval (min) |",
        "|---|---:|---:|" + "---:|" * len(cols) + "---:|---:|---:|---:|---:|---:|",
    ]
    for key in methods:
        runs = [found[(key, s)] for s in seeds if (key, s) in found]
        if not runs:
            continue
        label = variant(key).label
        attack_cells = [cell([r["attacks"][a]["accuracy"] for r in runs
                               if r["attacks"][a]["accuracy"] is not None]) for a in cols]
        train_min = np.mean([r["train_seconds"] or 0.0 for r in runs]) / 60
        eval_min = np.mean([r["eval_seconds"] for r in runs]) / 60
        lines.append(
            f"| {label} | {len(runs)} | {cell([r['clean'] for r in runs])} | "
            + " | ".join(attack_cells)
            + f" | {cell([r['a_rob_stage1'] for r in runs])} | "
            f"{cell([r['a_rob_main'] for r in runs])} | "
            f"{cell([r['a_rob_main_on_subset'] for r in runs])} | "
            f"**{cell([r['a_rob_subset'] for r in runs])}** | {train_min:.1f} | "
            f"{eval_min:.1f} |")
    lines += ["", "## Does ADT beat AT_PGD here?", ""]
    if ("pgd_at", base_seeds[0]) in found:
        lines += [in_short(found, seeds, [k for k in ADT_KEYS if k in methods]), ""]
        for key in ADT_KEYS:
            if key in methods and any((key, s) in found for s in seeds):
                lines.append(f"- {variant(key).label}: A_rob (all, first {m}) "
                             f"{verdict(found, seeds, key)}; A_rob after stage 2 ({n} inputs) "
                             f"{verdict(found, seeds, key, metric='a_rob_main')}.")
        if "adt_exp_fresh" in methods and any(("adt_exp_fresh", s) in found for s in seeds):
            lines.append(
                f"- Ablation, ADT_EXP with fresh inner gradients against ADT_EXP (the "
                f"reference's accumulated ones): A_rob (all, first {m}) "
                + verdict(found, seeds, "adt_exp_fresh", baseline="adt_exp").replace(
                    "AT_PGD", "ADT_EXP") + f"; A_rob after stage 2 ({n} inputs) "
                + verdict(found, seeds, "adt_exp_fresh", baseline="adt_exp",
                          metric="a_rob_main").replace("AT_PGD", "ADT_EXP") + ".")
        for key in FAMILY_KEYS:
            if key in methods and any((key, s) in found for s in seeds):
                lines.append(family_line(found, seeds, key, m, n))
        lines += ["", "(\"Beyond the seed spread\": the intervals mean ± spread do not "
                  f"overlap; with {len(base_seeds)} seeds"
                  + (f" ({len(seeds)} for some rows)" if extra else "")
                  + " this is a weak test, and at this scale "
                  "the models are far from the paper's.)"]
        base = [found[("pgd_at", s)] for s in seeds if ("pgd_at", s) in found]
        lines += ["", "Sampling error of the test inputs alone, beside the seed spread: the "
                  "binomial standard error of one run's A_rob at AT_PGD's level is "
                  f"{binomial_se(np.mean([r['a_rob_main'] for r in base]), n):.2f} points on "
                  f"{n} inputs and "
                  f"{binomial_se(np.mean([r['a_rob_subset'] for r in base]), m):.2f} on {m}."]
    restored = sorted(f"{k}-seed{s}" for (k, s), r in found.items() if r.get("restored_from"))
    if restored:
        lines += ["", f"Evaluations restored from an earlier sitting's results JSON "
                  f"(`--restore_from`): {', '.join(restored)}. {restored_check(workdir, found)}"]
        unrecorded = sorted(f"{k}-seed{s}" for (k, s), r in found.items()
                            if r.get("restored_from") and "run_config" not in r)
        if unrecorded:
            lines[-1] += (f" **Not checked against this recipe**: {', '.join(unrecorded)} "
                          "(written before the results recorded each run's training "
                          "configuration; they are taken to be this recipe's runs).")
    lines += ["", "## Attack settings", ""]
    for name in main_attacks + late_attacks + subset_attacks:
        info = any_run["attacks"].get(name)
        if info is None:
            continue
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in sorted(info["params"].items()))
        inputs = (f"first {n}, every clean-correct input" if name in main_attacks else
                  f"first {n}, inputs still robust after stage 1" if name in late_attacks
                  else f"first {m}, inputs still robust after stages 1 and 2")
        lines.append(f"- {info['label']} (`{name}`): {params or '-'}; {inputs}.")
    warnings = sorted({f"{variant(k).label}, seed {s}: {w}" for (k, s), r in found.items()
                       for w in r["warnings"]})
    lines += ["", "## Sanity-check warnings", ""]
    lines += [f"- {w}" for w in warnings] or ["- None."]
    if missing:
        lines += ["", f"Runs not finished yet (not in the table): {', '.join(missing)}."]
    lines += ["", f"Command: `{command}`", ""]
    os.makedirs(output_dir, exist_ok=True)
    stem = os.path.join(output_dir, f"robustness_cifar10_{scale}" + ("_l2" if l2 else ""))
    write_text(stem + ".md", "\n".join(lines))
    write_json(stem + ".json", {f"{k}-seed{s}": r for (k, s), r in found.items()})
    plot(found, seeds, methods, stem + ".png", n, m, scale, recipe.epsilon_text)
    print(f"Written {stem}.md, .json, .png")
    return stem + ".md"


def restored_check(workdir: str, found: dict) -> str:
    """For restored evaluations whose model was trained again in this sitting (as a transfer
    source): whether the new model's clean accuracy on the same test inputs (its training
    report) equals the evaluated one's, i.e. whether the seeded training reproduced it."""
    same, differ = [], []
    for (key, seed), summary in sorted(found.items()):
        report = read_json(os.path.join(run_dir(workdir, key, seed), "report.json"), None)
        if not summary.get("restored_from") or report is None:
            continue
        if report.get("num_examples") != summary["num_examples"]:
            continue
        (same if round(report["clean_accuracy"] * report["num_examples"])
         == round(summary["clean"] * summary["num_examples"]) else differ).append(
            f"{key}-seed{seed}")
    text = []
    if same:
        text.append(f"Trained again here as transfer sources, with the clean accuracy of the "
                    f"evaluated model on the same inputs: {', '.join(same)}.")
    if differ:
        text.append(f"**Trained again here with a clean accuracy that differs from the "
                    f"evaluated model's** (the transfer attacks of the other seed used the new "
                    f"model): {', '.join(differ)}.")
    return " ".join(text)


def plot(found: dict, seeds: list[int], methods: list[str], path: str, n: int, m: int,
         scale: str, budget: str = "epsilon 8/255") -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = [k for k in methods if any((k, s) in found for s in seeds)]
    metrics = [("clean", f"clean ({n})"), ("pgd20", f"PGD-20 ({n})"),
               ("a_rob_main", f"A_rob after stage 2 ({n})"),
               ("a_rob_subset", f"A_rob, all attacks (first {m})")]
    fig = Figure(figsize=(11, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    width = 0.8 / len(metrics)
    for i, (metric, name) in enumerate(metrics):
        means, spreads = [], []
        for k in keys:
            runs = [found[(k, s)] for s in seeds if (k, s) in found]
            vals = [r["attacks"]["pgd20"]["accuracy"] if metric == "pgd20" else r[metric]
                    for r in runs]
            mean, spread = mean_spread(vals)
            means.append(mean)
            spreads.append(spread)
        pos = np.arange(len(keys)) + (i - (len(metrics) - 1) / 2) * width
        ax.bar(pos, means, width, yerr=spreads, capsize=3, label=name)
    ax.set_xticks(np.arange(len(keys)))
    ax.set_xticklabels([variant(k).label for k in keys], rotation=15)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"CIFAR-10, {scale} recipe, {budget}: mean over seeds "
                 f"{', '.join(map(str, seeds))}, bars = spread")
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)
