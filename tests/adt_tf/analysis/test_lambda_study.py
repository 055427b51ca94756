"""`adt_tf.analysis.lambda_study`: trial tables in CSV and JSON."""

import csv
import json

import pytest

from adt_tf.analysis import (
    read_trial_table,
)


def test_trial_tables_in_csv_and_json(tmp_path):
    rows = [
        {"trial_id": "0", "status": "COMPLETED", "entropy_weight": 0.0,
         "val_clean_accuracy": 0.8, "val_robust_accuracy": 0.40, "entropy": -3.2},
        {"trial_id": "1", "status": "COMPLETED", "entropy_weight": 0.01,
         "val_clean_accuracy": 0.79, "val_robust_accuracy": 0.45, "entropy": "n/a"},
        {"trial_id": "2", "status": "RUNNING", "entropy_weight": 0.1,
         "val_clean_accuracy": None, "val_robust_accuracy": None, "entropy": None},
    ]
    with open(tmp_path / "t.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    (tmp_path / "t.json").write_text(json.dumps(rows))
    for name in ("t.csv", "t.json"):
        points = read_trial_table(str(tmp_path / name))
        assert [p.lam for p in points] == [0.0, 0.01]  # the running trial is left out
        assert points[0].robust_accuracy == {"val_robust_accuracy": 0.4}
        assert points[0].clean_accuracy == 0.8 and points[1].entropy is None
    (tmp_path / "bad.csv").write_text("alpha,robust\n1,2\n")
    with pytest.raises(ValueError, match="no lambda column"):
        read_trial_table(str(tmp_path / "bad.csv"))
    with pytest.raises(ValueError, match="missing.csv"):
        read_trial_table(str(tmp_path / "missing.csv"))
