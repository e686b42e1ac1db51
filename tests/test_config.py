"""Config: reference defaults, every validation rule, unknown keys, JSON round trip."""

import json

import pytest

from mnist_lib import Config
from mnist_lib.core.errors import UserError


def test_defaults_are_the_reference_experiment():
    c = Config()
    assert (c.epochs, c.batch_size, c.lr, c.weight_decay) == (25, 128, 5e-4, 5e-5)
    assert c.hidden == (512, 256, 128) and c.dropout == (0.4, 0.3, 0.3)
    assert (c.lr_factor, c.lr_patience, c.val_size) == (0.5, 3, 6000)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"lr": 0}, "lr must be > 0"),
        ({"lr": -1e-3}, "lr must be > 0"),
        ({"lr": float("nan")}, "lr must be > 0"),
        ({"lr": float("inf")}, "lr must be > 0"),
        ({"weight_decay": -1e-5}, "weight_decay must be >= 0"),
        ({"dropout": (0.4, 0.3, 1.0)}, r"dropout must be in \[0, 1\)"),
        ({"dropout": (0.4, -0.1, 0.3)}, r"dropout must be in \[0, 1\)"),
        ({"dropout": (0.4, 0.3)}, "one dropout per hidden layer"),
        ({"hidden": (512, 0, 128)}, r"hidden widths must be in \[1, 2\*\*31 - 1\]"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"batch_size": 0}, "batch_size must be >= 1"),
        ({"lr_factor": 1.0}, "lr_factor must be in"),
        ({"lr_factor": 0.0}, "lr_factor must be in"),
        ({"lr_patience": -1}, "lr_patience must be >= 0"),
        ({"val_size": 5}, "val_size must be in"),
        ({"val_size": 60000}, "val_size must be in"),
        ({"seed": -1}, r"seed must be in \[0, 2\*\*32 - 1\]"),
        ({"seed": 2**32}, r"seed must be in \[0, 2\*\*32 - 1\]"),
        ({"split_seed": -1}, "split_seed must be in"),
        ({"hidden": (2**31,), "dropout": (0.0,)}, "hidden widths must be in"),
        ({"lr": 10**400}, "lr must be a finite number"),
        ({"epochs": 2.5}, "epochs must be an integer"),
        ({"epochs": True}, "epochs must be an integer"),
        ({"lr": "fast"}, "lr must be a number"),
        ({"hidden": 512}, "hidden must be a list"),
        ({"hidden": "512"}, "hidden must be a list"),
        ({"hidden": (512.5,), "dropout": (0.1,)}, "hidden must be a list of integers"),
    ],
)
def test_invalid_values_are_refused(changes, message):
    with pytest.raises(UserError, match=message):
        Config(**changes)
    with pytest.raises(UserError, match=message):
        Config().replace(**changes)


def test_unknown_keys_are_refused_with_the_valid_list():
    with pytest.raises(UserError) as err:
        Config.from_dict({"learning_rate": 0.1, "lr": 0.1})
    msg = str(err.value)
    assert "learning_rate" in msg
    assert all(name in msg for name in Config.field_names())


def test_json_round_trip_and_list_coercion(tmp_path):
    c = Config(hidden=[64, 32], dropout=[0.1, 0], lr=1, epochs=3.0)
    assert c.hidden == (64, 32) and c.dropout == (0.1, 0.0) and isinstance(c.lr, float) and c.epochs == 3
    assert Config.from_json(c.to_json()) == c
    path = tmp_path / "c.json"
    path.write_text(c.to_json())
    assert Config.load(path) == c
    assert json.loads(c.to_json())["hidden"] == [64, 32]


def test_no_hidden_layer_is_allowed():
    assert Config(hidden=(), dropout=()).hidden == ()


def test_bad_config_files_name_the_file(tmp_path):
    with pytest.raises(UserError, match="config file .*missing.json not found"):
        Config.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(UserError, match="bad.json"):
        Config.load(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(UserError, match="mapping"):
        Config.load(tmp_path / "list.json")


def test_config_is_immutable_and_hashable():
    c = Config()
    with pytest.raises(AttributeError):
        c.lr = 1.0
    assert hash(c) == hash(Config())


def test_precision_is_a_checked_choice():
    assert Config(precision="bf16").precision == "bf16"
    with pytest.raises(UserError, match="precision must be one of fp32, bf16, got 'fp16'"):
        Config(precision="fp16")
    with pytest.raises(UserError, match="precision must be a string"):
        Config.from_dict({"precision": 16})


def test_defaults_are_the_reference_experiment_and_every_field_is_documented():
    c = Config()
    assert (c.epochs, c.batch_size, c.lr, c.weight_decay, c.hidden, c.dropout) == (25, 128, 5e-4, 5e-5, (512, 256, 128), (0.4, 0.3, 0.3))
    assert (c.lr_schedule, c.lr_factor, c.lr_patience, c.val_size, c.precision) == ("plateau", 0.5, 3, 6000, "fp32")
    assert (c.dataset, c.optimizer, c.momentum, c.nesterov, c.activation, c.norm) == ("mnist", "adam", 0.0, False, "relu", "none")
    import dataclasses

    for f in dataclasses.fields(Config):
        assert f.metadata["help"] and isinstance(Config.choices(f.name), tuple), f.name
    assert Config.choices("precision") == ("fp32", "bf16")
    assert Config.choices("dataset") == ("mnist", "fashion-mnist", "kmnist")


def test_to_json_is_indented_and_from_json_names_its_errors():
    assert Config().to_json().startswith('{\n  "dataset": "mnist",\n  "epochs": 25,') and Config().to_json().endswith("}\n")
    with pytest.raises(UserError, match="^invalid config JSON: Expecting property name"):
        Config.from_json("{'lr': 1}")
