"""pipeline.experiment.schema: every key of the schema refuses an invalid value with a message that
names the key, the file, what is allowed and what was received."""

from __future__ import annotations

import math

import pytest

from pipeline.errors import PipelineError
from pipeline.experiment.config import validate
from pipeline.experiment.schema import RECIPE_KEYS, SCHEMA, Key
from pipeline.training.recipe import TrainRecipe

MINIMAL = {"experiment": {"name": "t"}, "data": {"dataset": "derm7pt", "root": "/data/derm7pt"}}
CASES = [(section, name, value) for section, keys in SCHEMA.items() for name, key in keys.items()
         for value in key.invalid_values()]


def _with(section: str, name: str, value) -> dict:
    raw = {s: dict(v) for s, v in MINIMAL.items()}
    raw.setdefault(section, {})[name] = value
    return raw


def test_every_key_has_invalid_values_and_a_description():
    assert len(CASES) >= 2 * sum(len(k) for k in SCHEMA.values())
    for section, keys in SCHEMA.items():
        for name, key in keys.items():
            assert key.description, f"{section}.{name} has no description"
            if key.default is not None:
                key.check(key.default)  # every default is itself valid


@pytest.mark.parametrize("section, name, value", CASES,
                         ids=[f"{s}.{n}={v!r}" for s, n, v in CASES])
def test_invalid_value_names_key_file_allowed_and_received(section, name, value):
    key = SCHEMA[section][name]
    with pytest.raises(PipelineError) as err:
        validate(_with(section, name, value), "experiments/x.toml")
    message = str(err.value)
    assert f"`{section}.{name}` in experiments/x.toml must be {key.allowed()}" in message, message
    assert f"Got {value!r} instead" in message, message


def test_numbers_must_be_finite_everywhere():
    assert SCHEMA["svm"]["C_grid"].invalid_values()[-1] == [SCHEMA["svm"]["C_grid"].item.invalid_values()[0]]
    for bad in (math.inf, -math.inf, math.nan):
        with pytest.raises(PipelineError, match="finite"):
            validate(_with("svm", "C_grid", [1.0, bad]), "x.toml")
        with pytest.raises(PipelineError, match="finite"):
            validate(_with("report", "threshold", bad), "x.toml")


def test_recipe_defaults_come_from_the_recipe_itself():
    recipe = TrainRecipe()
    assert set(SCHEMA["train"]) == set(RECIPE_KEYS) | {"devices"}  # devices: not in the recipe
    assert SCHEMA["finetune"]["devices"].default is None
    for name in RECIPE_KEYS:
        key = SCHEMA["train"][name]
        default = getattr(recipe, name)
        assert key.check(key.default) == default, name
        assert SCHEMA["finetune"][name].default is None  # an override inherits [train]


def test_a_key_of_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="unknown key kind"):
        Key(kind="date", default=None, description="?")
