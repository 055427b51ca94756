"""`adt_tf.tuning.report`: the best row and the trial table."""



from adt_tf import tuning


def test_best_row_is_the_highest_robust_accuracy_with_deterministic_ties():
    def row(trial_id, robust, clean, status="COMPLETED"):
        return {"trial_id": trial_id, "status": status, "val_robust_accuracy": robust,
                "val_clean_accuracy": clean}

    rows = [row("0", 0.2, 0.9), row("1", 0.3, 0.4), row("2", 0.3, 0.6), row("3", 0.3, 0.6),
            row("4", None, None, "FAILED")]
    assert tuning.report.best_row(rows)["trial_id"] == "2"
    assert tuning.report.best_row([rows[4]]) is None
    table = tuning.report.markdown_table(rows)
    assert "| 2 | COMPLETED | 60.00% | 30.00% | n/a | n/a |" in table
