"""The run schema (adt_tf/training/config.py): values read from text, every setting with one
flag, overrides, recipe files, unknown keys, the flat records of version 1."""

from __future__ import annotations

import dataclasses
import math

import pytest

from adt_tf.training import config as schema
from adt_tf.training.config import RunConfig


@pytest.mark.parametrize("text, value", [("true", True), ("False", False), ("1", True),
                                         ("0", False), ("TRUE", True)])
def test_a_boolean_reads_true_false_1_0(text, value):
    assert schema.parse_bool(text, "random_epsilon") is value


@pytest.mark.parametrize("text", ["yes", "no", "t", "", "2", "none"])
def test_any_other_boolean_is_refused_with_the_allowed_spellings(text):
    with pytest.raises(ValueError, match="random_epsilon must be true, false, 1 or 0"):
        schema.parse_bool(text, "random_epsilon")


def test_numbers_and_fractions():
    assert schema.parse_number("8/255", "--epsilon", float) == pytest.approx(8 / 255)
    assert schema.parse_number("0.5", "--epsilon", float) == 0.5
    assert schema.parse_number("76", "--epochs", int) == 76
    for bad, kind in (("1.5", int), ("abc", float), ("1/0", float), ("8/255", int)):
        with pytest.raises(ValueError, match="--x must be"):
            schema.parse_number(bad, "--x", kind)


def test_every_setting_has_one_flag_and_a_help_line():
    paths = schema.flag_paths()
    assert len(paths) == len(list(schema.schema_fields()))
    for path, field, _ in schema.schema_fields():
        assert field.metadata["help"], path
        assert paths[schema.flag_name(path, field)] == path


def test_override_coerces_and_refuses_unknown_paths():
    config = schema.override(RunConfig(), {"optim.epochs": "5", "threat.epsilon": "8/255",
                                           "optim.lr_decay_epochs": "3,4"})
    assert config.optim.epochs == 5 and config.optim.lr_decay_epochs == (3, 4)
    assert math.isclose(config.threat.epsilon, 8 / 255)
    with pytest.raises(ValueError, match="did you mean optim.epochs"):
        schema.override(RunConfig(), {"optim.epoch": 5})


def test_from_flags_uses_the_command_lines_names():
    config = RunConfig.from_flags(epochs=3, method="pgd_at", model_params={"width": 4},
                                  validation_examples=10)
    assert (config.optim.epochs, config.method.name, config.model.params,
            config.validation.examples) == (3, "pgd_at", {"width": 4}, 10)
    with pytest.raises(ValueError, match="did you mean epochs"):
        RunConfig.from_flags(epoch=3)


def test_validate_names_the_flag_of_a_bad_value():
    for changes, flag in (({"optim.momentum": 1.5}, "--momentum"),
                          ({"threat.norm": "l3"}, "--norm"),
                          ({"validation.ema_decay": 1.0}, "--ema_decay"),
                          ({"optim.epochs": 0}, "--epochs"),
                          ({"validation.attack": "fgsm"}, "--validation_attack"),
                          ({"validation.ema_warmup": True}, "--ema_warmup")):
        with pytest.raises(ValueError, match=flag):
            schema.override(RunConfig(), changes).validate()


def test_a_config_round_trips_through_plain_data():
    config = RunConfig.from_flags(epochs=3, method_params={"inner_steps": 2},
                                  lr_decay_epochs=(2,), epsilon=0.5, norm="l2")
    again = RunConfig.from_dict(config.to_dict())
    assert again == config


def test_unknown_keys_of_a_config_name_the_closest():
    data = RunConfig().to_dict()
    data["optim"]["epoch"] = 3
    with pytest.raises(ValueError, match="config.optim has no setting 'epoch'.*epochs"):
        RunConfig.from_dict(data)
    with pytest.raises(ValueError, match="no setting 'optimizer'.*optim"):
        RunConfig.from_dict({"optimizer": {}})


def test_the_shipped_recipes_load(tmp_path):
    for name in schema.recipe_names():
        assert isinstance(schema.load_config_file(name), RunConfig), name
    assert schema.load_config_file("cpu").model.params == {"width": 16, "batch_norm": True,
                                                            "dropout": 0.0}


@pytest.mark.parametrize("text, message", [
    ("raise RuntimeError('boom')", r"does not import \(RuntimeError: boom\)"),
    ("x = 1", "has no get_config"),
    ("def get_config():\n    return {}", "must return an adt_tf.training.config.RunConfig"),
    ("def get_config():\n    raise KeyError('k')", r"its get_config\(\) failed"),
])
def test_a_bad_config_file_is_named(tmp_path, text, message):
    path = tmp_path / "recipe.py"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as info:
        schema.load_config_file(str(path))
    assert "--config=" in str(info.value)
    with pytest.raises(ValueError, match="no such file, nor a recipe"):
        schema.load_config_file("no_such_recipe")


def test_a_flat_record_of_version_1_migrates():
    flat = {"workdir": "w", "method": "pgd_at", "epochs": 6, "lr_decay_epochs": [5],
            "method_params": {"attack_steps": 10, "attack_step_size": 2 / 255},
            "epsilon": None, "validation_examples": 100, "ema_decay": 0.999}
    config, version = schema.migrate_flat_record(flat)
    assert version == 1
    assert (config.method.name, config.optim.epochs, config.optim.lr_decay_epochs) == (
        "pgd_at", 6, (5,))
    assert config.validation.examples == 100 and config.validation.ema_decay == 0.999
    assert config.validation.ema_warmup is False  # no warm-up existed then
    assert config.threat.epsilon is None
    assert dataclasses.replace(config.run, workdir="x").workdir == "x"


def test_typed_arguments_follow_the_signature():
    signature = {"adv_fraction": 0.5, "random_epsilon": False, "attack_step_size": None,
                 "outer_loss": "ce", "inner_steps": 7}
    typed = schema.typed_arguments(
        {"random_epsilon": "False", "attack_step_size": "2/255", "inner_steps": "3",
         "adv_fraction": "1"}, signature, "method_params", "--method=x")
    assert typed == {"random_epsilon": False, "attack_step_size": pytest.approx(2 / 255),
                     "inner_steps": 3, "adv_fraction": 1.0}
    with pytest.raises(ValueError, match="true, false, 1 or 0"):
        schema.typed_arguments({"random_epsilon": "yes"}, signature, "method_params", "m")
    with pytest.raises(ValueError, match="did you mean inner_steps"):
        schema.typed_arguments({"inner_step": "3"}, signature, "method_params", "m")
    with pytest.raises(ValueError, match="must be an integer"):
        schema.typed_arguments({"inner_steps": "3.5"}, signature, "method_params", "m")
