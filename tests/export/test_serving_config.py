"""`export.serving_config`: models.config."""

import os

import pytest
from google.protobuf import text_format

from export import serving_config
from tests.export.helpers import NAME


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
