"""`export.serving_config`: models.config."""

import os

import pytest
from google.protobuf import text_format

from export import serving_config
from tests.export.helpers import NAME
from tests.helpers import start_python


def test_models_config_parses_and_lists_every_model(exported, normalised_model, tmp_path):
    from tensorflow_serving.config import model_server_config_pb2

    def parse(path):
        config = model_server_config_pb2.ModelServerConfig()
        text_format.Parse(open(path).read(), config)
        return [(c.name, c.base_path, c.model_platform) for c in config.model_config_list.config]

    assert parse(os.path.join(exported[0], "models.config")) == [
        (NAME, f"/models/{NAME}", "tensorflow")]
    base = str(tmp_path)
    serving_config.update_models_config(base, "a")
    serving_config.update_models_config(base, "b", serving_root="/srv/exports/")
    serving_config.update_models_config(base, "a", serving_root="/data")
    assert parse(os.path.join(base, "models.config")) == [
        ("a", "/data/a", "tensorflow"), ("b", "/srv/exports/b", "tensorflow")]
    with open(os.path.join(base, "models.config"), "w") as f:
        f.write("this is { not a config")
    with pytest.raises(ValueError, match="not a ModelServerConfig.*not overwritten"):
        serving_config.update_models_config(base, "c")
    assert open(os.path.join(base, "models.config")).read() == "this is { not a config"


@pytest.mark.slow
def test_concurrent_exports_into_one_folder_keep_every_model_listed(tmp_path):
    """Two processes adding 150 models each to one models.config: all 300 are listed (without
    the lock, 180 of 300 remained)."""

    from export.serving_config import read_models_config

    script = ("import sys; from export.serving_config import update_models_config\n"
              "for i in range(150):\n"
              "    update_models_config(sys.argv[1], f'{sys.argv[2]}{i}')\n")
    procs = [start_python(script, tmp_path, prefix) for prefix in ("a", "b")]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    names = {e.name for e in read_models_config(
        str(tmp_path / "models.config")).model_config_list.config}
    assert names == {f"{p}{i}" for p in "ab" for i in range(150)}


def test_an_empty_serving_root_is_refused():
    import pytest

    from export.serving_config import check_serving_root, prepare_models_config

    for bad in ("", "models", "relative/path"):
        with pytest.raises(ValueError, match="--serving_root must be the absolute path"):
            check_serving_root(bad)
    with pytest.raises(ValueError, match="--serving_root"):
        prepare_models_config("/tmp/unused_export_base", "m", serving_root="")
