"""The atomic writer (adt_tf/core/files.py) and the one uint8 -> [0, 1] conversion (data.py)."""

import json
import os

import numpy as np
import pytest

from adt_tf.core.files import write_json, write_text
from adt_tf.data import as_unit_float


def test_write_json_round_trips_and_leaves_no_temporary(tmp_path):
    path = str(tmp_path / "report.json")
    assert write_json(path, {"a": [1, 2.5], "b": None}) == path
    with open(path) as f:
        assert json.load(f) == {"a": [1, 2.5], "b": None}
    assert os.listdir(tmp_path) == ["report.json"]
    assert open(path).read() == json.dumps({"a": [1, 2.5], "b": None}, indent=2)
    write_json(path, [3], indent=None)
    assert open(path).read() == "[3]"


def test_a_payload_that_cannot_be_encoded_keeps_the_old_file(tmp_path):
    path = str(tmp_path / "config.json")
    write_json(path, {"epochs": 5})
    with pytest.raises(TypeError):
        write_json(path, {"epochs": object()})
    assert json.load(open(path)) == {"epochs": 5}
    assert os.listdir(tmp_path) == ["config.json"]
    write_json(path, {"x": object()}, default=lambda v: "?")
    assert json.load(open(path)) == {"x": "?"}


def test_a_failed_write_removes_its_temporary_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = str(tmp_path / "table.md")
    write_text(path, "old\n")

    def full_disk(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(OSError, match="No space"):
        write_text(path, "new\n")
    assert open(path).read() == "old\n"
    assert os.listdir(tmp_path) == ["table.md"]


def test_as_unit_float_scales_only_uint8():
    pixels = np.array([[0, 51, 255]], np.uint8)
    np.testing.assert_array_equal(as_unit_float(pixels), np.array([[0, 0.2, 1]], np.float32))
    assert as_unit_float(pixels).dtype == np.float32
    floats = np.array([0.25, 1.0], np.float64)
    out = as_unit_float(floats)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, floats.astype(np.float32))  # values kept, not divided
    assert as_unit_float([[1, 2]]).dtype == np.float32  # lists are arrays too
