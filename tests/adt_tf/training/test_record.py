"""A run's record (adt_tf/training/record.py): the one "same run?" comparison and the
algorithm versions that keep a run from resuming under changed algorithms."""

from __future__ import annotations

from adt_tf.training.config import RunConfig, algorithm_version, override
from adt_tf.training.record import RESUMABLE, RunRecord, describe_differences, differences


def test_only_the_resumable_settings_may_change():
    old = RunRecord(RunConfig())
    moved = RunRecord(override(RunConfig(), {p: v for p, v in (
        ("run.workdir", "elsewhere"), ("run.verbose", 2), ("data.data_dir", "/data"),
        ("compute.intra_op_threads", 1), ("report.eval_examples", 7),
        ("optim.epochs", 90))}))
    assert differences(old, moved) == []
    changed = RunRecord(override(RunConfig(), {"optim.lr": 0.05,
                                               "method.params": {"inner_steps": 3}}))
    diff = differences(old, changed)
    assert [d[0] for d in diff] == ["method.params", "optim.lr"]
    assert describe_differences(diff) == ("method.params.inner_steps: None -> 3, "
                                          "optim.lr: 0.1 -> 0.05")
    cyclic = RunConfig.from_flags(lr_schedule="cyclic")
    assert differences(RunRecord(cyclic), RunRecord(override(cyclic, {"optim.epochs": 9}))
                       ) == [("optim.epochs", 76, 9)]  # the triangle spans the run
    assert "run.workdir" in RESUMABLE


def test_only_the_settings_whose_algorithm_changed_have_a_new_version():
    assert algorithm_version(RunConfig()) == 2
    assert algorithm_version(RunConfig.from_flags(method="pgd_at")) == 2
    assert algorithm_version(RunConfig.from_flags(method="alp")) == 3
    assert algorithm_version(RunConfig.from_flags(method="fast_at",
                                                  lr_schedule="cyclic")) == 3
    old = RunRecord(RunConfig.from_flags(method="alp"), algorithm_version=2)
    new = RunRecord(RunConfig.from_flags(method="alp"), algorithm_version=3)
    assert differences(old, new) == [("algorithm_version", 2, 3)]


def test_a_method_argument_the_run_never_reads_does_not_make_another_run():
    # ADT_EXP's diagonal family has no factors: its factor step's default moved from 0.01 to
    # 0.003 (the family sweeps) without changing any diagonal run, so a run recorded with the
    # old default is the same run; with the low-rank family the step is read, and it is not.
    def record(family, factor_lr, rank=8):
        return RunRecord(override(RunConfig.from_flags(method="adt_exp"), {"method.params": {
            "family": family, "factor_lr": factor_lr, "rank": rank}}))

    assert differences(record("diag", 0.01, rank=4), record("diag", 0.003)) == []
    diff = differences(record("lowrank", 0.01), record("lowrank", 0.003))
    assert describe_differences(diff) == "method.params.factor_lr: 0.01 -> 0.003"
    assert describe_differences(differences(record("diag", 0.01), record("lowrank", 0.01))
                                ) == "method.params.family: 'diag' -> 'lowrank'"
