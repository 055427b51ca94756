"""The `autoattack` suite's time, attack by attack, before and after a change, in one run.

    python -m bench.eval_speed --model=bench/runs/robustness_cpu/pgd_at-seed0/classifier.keras \
        --before=<git revision> --num_examples=200 --threads=1

Runs AutoAttack's standard version (`autoattack` suite: APGD-CE, APGD-T, FAB-T, Square, each
on the inputs still robust) on the first `--num_examples` test images of the offline CIFAR-10
copy with the package as it was at `--before` (its `adt_tf/` taken from git into a temporary
folder) and with the package of this checkout, one child process each, alternating
(`--repeats` times), on the same inputs with the same seeds and no cache. Per attack: inputs
it ran on, wall seconds and milliseconds per input; the suite's wall time and robust
accuracy; and whether both versions leave exactly the same inputs robust (a speed-up that
changes the answer would be a different attack). Writes bench/results/eval_speed_<tag>.md and
.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

from adt_tf.core.files import write_json, write_text

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.normpath(os.path.join(ROOT, "..", "shared", "data", "cifar10"))


def child(args) -> None:
    """One timed suite with the package found first on sys.path (set by the parent)."""
    import tensorflow as tf

    if args.threads:
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)
    import adt_tf
    from adt_tf import data as data_lib
    from adt_tf.artifacts.loading import load_classifier
    from adt_tf.data import resolve_threat
    from adt_tf.evaluation import evaluate

    classifier = load_classifier(args.model)
    splits = data_lib.load(f"npz:{args.data}", max_test_examples=args.num_examples)
    t0 = time.perf_counter()
    result = evaluate(classifier, splits.x_test, splits.y_test, suite="autoattack",
                      per_attack="remaining",
                      threat=resolve_threat(args.norm, None, splits.info),
                      batch_size=args.batch_size, seed=0, cache_dir=None,
                      sanity_checks=False, verbose=0)
    wall = time.perf_counter() - t0
    out = {"package": os.path.dirname(adt_tf.__file__), "wall_seconds": wall,
           "clean": result.clean_accuracy, "robust": result.robust_accuracy,
           "robust_per_example": result.per_example["robust"].astype(int).tolist(),
           "attacks": [{"name": a.name, "label": a.label, "attacked": a.num_attacked,
                        "broken": a.num_broken, "seconds": a.seconds} for a in result.attacks]}
    write_json(args.child_out, out, indent=None)


def snapshot(revision: str, into: str) -> str:
    """Extracts adt_tf/ at `revision` into `into`; returns the folder to put on sys.path."""
    archive = subprocess.run(["git", "-C", ROOT, "archive", revision, "adt_tf"],
                             check=True, capture_output=True).stdout
    os.makedirs(into, exist_ok=True)
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    return into


def run_version(root: str, args, out_path: str) -> dict:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, ROOT]))
    cmd = [sys.executable, "-m", "bench.eval_speed", "--child", "--child_out", out_path,
           "--model", args.model, "--data", args.data, "--num_examples", str(args.num_examples),
           "--batch_size", str(args.batch_size), "--threads", str(args.threads),
           "--norm", args.norm]
    subprocess.run(cmd, check=True, env=env, cwd=root,
                   stdout=subprocess.DEVNULL if not args.verbose else None)
    with open(out_path) as f:
        return json.load(f)


def table(runs: dict[str, list[dict]], args, revision: str, head: str) -> list[str]:
    before, after = runs["before"], runs["after"]
    names = [a["name"] for a in before[0]["attacks"]]
    labels = {a["name"]: a["label"] for a in before[0]["attacks"]}

    def per_attack(version, name, key):
        return [next(a[key] for a in r["attacks"] if a["name"] == name) for r in version]

    same = all(b["robust_per_example"] == a["robust_per_example"] for b in before for a in after)
    lines = [
        "# The `autoattack` suite's time, before and after", "",
        f"- Model: `{args.model}`; the first {args.num_examples} test images of the offline "
        f"CIFAR-10 copy; norm {args.norm}, the dataset's epsilon; AutoAttack's standard "
        "version (`autoattack` suite: APGD-CE, APGD-T with 9 targets, FAB-T with 9 targets, "
        "Square with 5,000 queries, each on the inputs still robust), batch "
        f"{args.batch_size}, seed 0, no cache, no sanity checks.",
        f"- before: `adt_tf` at {revision}; after: `adt_tf` at {head}. One child process per "
        f"suite, {args.threads or 'default'} thread(s), alternating before/after "
        f"{args.repeats} time(s) in one run; cells are the mean over the repeats.",
        f"- Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"load average at the end {' / '.join(f'{v:.1f}' for v in os.getloadavg())}.",
        f"- Same inputs left robust by both versions: **{'yes' if same else 'NO'}** "
        f"(robust accuracy before {100 * before[0]['robust']:.1f}%, after "
        f"{100 * after[0]['robust']:.1f}%; clean {100 * before[0]['clean']:.1f}%).",
        "",
        "| attack | inputs attacked | broken | before (s) | after (s) | before (ms/input) | "
        "after (ms/input) | speed-up |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in names:
        attacked = per_attack(before, name, "attacked")[0]
        broken = per_attack(before, name, "broken")[0]
        tb, ta = np.mean(per_attack(before, name, "seconds")), np.mean(per_attack(after, name,
                                                                                 "seconds"))
        per = max(attacked, 1)
        lines.append(f"| {labels[name]} | {attacked} | {broken} | {tb:.1f} | {ta:.1f} | "
                     f"{1000 * tb / per:.0f} | {1000 * ta / per:.0f} | {tb / max(ta, 1e-9):.2f}x |")
    wb = np.mean([r["wall_seconds"] for r in before])
    wa = np.mean([r["wall_seconds"] for r in after])
    lines.append(f"| **suite (wall)** | {args.num_examples} | | **{wb:.1f}** | **{wa:.1f}** | "
                 f"{1000 * wb / args.num_examples:.0f} | {1000 * wa / args.num_examples:.0f} | "
                 f"**{wb / wa:.2f}x** |")
    lines += ["", f"Command: `python -m bench.eval_speed {' '.join(sys.argv[1:])}`"]
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=os.path.join(
        ROOT, "bench", "runs", "robustness_cpu", "pgd_at-seed0", "classifier.keras"))
    parser.add_argument("--before", help="git revision of the 'before' package")
    parser.add_argument("--data", default=DATA)
    parser.add_argument("--num_examples", type=int, default=200)
    parser.add_argument("--batch_size", type=int, default=250)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--norm", default="linf", choices=["linf", "l2"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--tag", default="cpu")
    parser.add_argument("--out_dir", default=os.path.join(ROOT, "bench", "results"))
    parser.add_argument("--verbose", action="store_true")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child_out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    if not args.before:
        sys.exit("bench.eval_speed: --before=<git revision> is required.")
    if not os.path.exists(args.model):
        sys.exit(f"bench.eval_speed: --model: no such file {args.model}.")
    if not os.path.exists(os.path.join(args.data, "test.npz")):
        sys.exit(f"bench.eval_speed: --data: no test.npz in {args.data}.")
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], check=True,
                          capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "adt_tf"],
                           capture_output=True, text=True).stdout.strip()
    head += " (+ uncommitted changes)" if dirty else ""
    runs: dict[str, list[dict]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        before_root = snapshot(args.before, os.path.join(tmp, "before"))
        for i in range(args.repeats):
            for version, root in (("before", before_root), ("after", ROOT)):
                out = os.path.join(tmp, f"{version}{i}.json")
                print(f"[{version} {i + 1}/{args.repeats}] running the suite...", flush=True)
                runs[version].append(run_version(root, args, out))
                print(f"[{version} {i + 1}/{args.repeats}] "
                      f"{runs[version][-1]['wall_seconds']:.1f} s", flush=True)
    lines = table(runs, args, args.before, head)
    os.makedirs(args.out_dir, exist_ok=True)
    stem = os.path.join(args.out_dir, f"eval_speed_{args.tag}")
    write_text(stem + ".md", "\n".join(lines) + "\n")
    write_json(stem + ".json", {"before": args.before, "after": head, "runs": runs}, indent=None)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
