"""XLA (``train.jit_compile``, ``extract.jit_compile``) and mixed precision as options: the option
reaches the compiled training, validation and extraction functions (their graphs carry XLA's
must-compile mark, the default's do not), XLA training on the CPU gives the default's losses within
a stated tolerance, XLA features the default's, the keys change only when it is on, the config
reaches the recipe, the combinations refused are refused, and the report header declares them."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipeline.errors import PipelineError
from pipeline.training.optimizer import compiled_steps
from pipeline.training.recipe import TrainRecipe
from pipeline.training.train import train_classifier

from training.test_train import RECIPE, scale, squares, tiny_model  # noqa: E402 (tests/ on path)

# XLA fuses the ops of a step and rounds their float32 sums in another order; over 6 epochs of
# SGD with momentum 0.9 those differences grow, measured here up to ~1e-6 relative. A wrong step
# (another loss, a missed update) differs by > 1e-2.
LOSS_RTOL = 1e-4


def must_compile(function, *args) -> bool:
    """Whether ``function``'s graph for ``args`` is marked for XLA (``_XlaMustCompile``)."""
    attr = function.get_concrete_function(*args).function_def.attr.get("_XlaMustCompile")
    return bool(attr is not None and attr.b)


def step_inputs():
    return tf.zeros((4, 32, 32, 3)), tf.one_hot([0, 1, 0, 1], 2)


@pytest.mark.parametrize("jit", [False, True])
def test_the_option_reaches_the_compiled_training_and_validation_steps(jit):
    model = tiny_model(seed=7)  # a model of its own: compiled steps are cached per model
    _, (train_step, val_step, _) = compiled_steps(model, TrainRecipe(jit_compile=jit), mixed=False)
    assert must_compile(train_step, *step_inputs()) is jit
    assert must_compile(val_step, *step_inputs()) is jit


def test_a_model_seen_before_gets_steps_compiled_for_its_own_setting():
    model = tiny_model(seed=8)
    _, plain = compiled_steps(model, TrainRecipe(), mixed=False)
    _, xla = compiled_steps(model, TrainRecipe(jit_compile=True), mixed=False)
    assert not must_compile(plain[0], *step_inputs())
    assert must_compile(xla[0], *step_inputs())


def no_dropout_model(seed: int = 0) -> keras.Model:
    """tiny_model without its dropout: XLA draws other random numbers than TensorFlow's kernels
    (dropout masks differ, measured loss differences ~1), so only a deterministic network can be
    compared number for number."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(inputs)
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu")(h)
    h = keras.layers.GlobalAveragePooling2D()(h)
    return keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(h))


def test_xla_training_on_the_cpu_gives_the_default_losses_within_tolerance(tmp_path):
    images, y = squares()
    runs = {}
    for jit in (False, True):
        model = no_dropout_model(seed=0)
        result = train_classifier(model, images, y,
                                  recipe=TrainRecipe(**{**RECIPE.__dict__, "jit_compile": jit}),
                                  preprocess=scale, seed=0, workdir=tmp_path / str(jit),
                                  progress=False)
        runs[jit] = ([row["loss"] for row in result.history],
                     [row["val_loss"] for row in result.history])
    (loss, val), (xla_loss, xla_val) = runs[False], runs[True]
    gap = max(np.max(np.abs(np.subtract(xla_loss, loss)) / np.abs(loss)),
              np.max(np.abs(np.subtract(xla_val, val)) / np.abs(val)))
    print(f"XLA vs default, 6 epochs: largest relative loss difference {gap:.2e}")
    assert len(xla_loss) == len(loss) == RECIPE.epochs
    assert gap < LOSS_RTOL
    assert loss[-1] < loss[0] * 0.9  # it trained, so the comparison means something


def test_the_recipe_key_is_in_the_cache_key_only_when_on():
    assert "jit_compile" not in TrainRecipe().as_dict()  # default keys are unchanged
    assert TrainRecipe(jit_compile=True).as_dict()["jit_compile"] is True


def test_xla_with_every_device_is_refused_naming_both_keys(tmp_path):
    images, y = squares()
    with pytest.raises(PipelineError, match=r"train.devices = 'all' with train.jit_compile"):
        train_classifier(tiny_model(), images, y, recipe=TrainRecipe(jit_compile=True, epochs=1),
                         preprocess=scale, seed=0, workdir=tmp_path, progress=False,
                         devices="all")


def test_mixed_precision_on_the_cpu_trains_in_float32_as_the_default(tmp_path, capsys):
    """No GPU: ``mixed_precision`` is ignored (logged) and the numbers are the default's bytes."""
    if tf.config.list_physical_devices("GPU"):
        pytest.skip("a GPU is present: mixed_float16 is used")
    images, y = squares()
    weights = {}
    for mixed in (False, True):
        model = tiny_model(seed=0)
        train_classifier(model, images, y,
                         recipe=TrainRecipe(**{**RECIPE.__dict__, "epochs": 2,
                                               "mixed_precision": mixed}),
                         preprocess=scale, seed=0, workdir=tmp_path / str(mixed), progress=False,
                         log=print)
        weights[mixed] = model.get_weights()
    assert "mixed_precision is ignored: no GPU" in capsys.readouterr().out
    assert all(np.array_equal(a, b) for a, b in zip(weights[False], weights[True], strict=True))


def test_xla_extraction_reaches_the_function_and_gives_the_default_features(tmp_path):
    from pipeline.features import extraction

    class Net:  # what _inference reads of a stored network
        def __init__(self, model):
            self.model, self.spec = model, None

    net = Net(tiny_model(seed=3))
    x = tf.constant(scale(squares()[0][:8].astype(np.float32)))
    _, plain = extraction._inference(net, outputs=True)
    _, xla = extraction._inference(net, outputs=True, jit_compile=True)
    assert not must_compile(plain, x) and must_compile(xla, x)
    np.testing.assert_allclose(xla(x).numpy(), plain(x).numpy(), rtol=1e-5, atol=1e-7)


def test_the_report_header_declares_each_numerics_option(tmp_path):
    from pipeline.experiment.config import load_config
    from pipeline.stages.report import compute_options

    path = tmp_path / "x.toml"
    path.write_text('[experiment]\nname = "x"\ncells = ["none"]\n[data]\ndataset = "derm7pt"\nroot = "r"\n'
                    '[train]\njit_compile = true\n[pretrain]\njit_compile = false\n'
                    'mixed_precision = true\n[extract]\njit_compile = true\n', encoding="utf-8")
    config = load_config(path)
    assert config.recipe("finetune").jit_compile and not config.recipe("pretrain").jit_compile
    assert compute_options(config) == ("pretrain mixed_float16 on a GPU (float32 on a CPU), "
                                       "finetune XLA (jit_compile), features XLA (jit_compile)")
    plain = tmp_path / "plain.toml"
    plain.write_text('[experiment]\nname = "x"\ncells = ["none"]\n[data]\ndataset = "derm7pt"\nroot = "r"\n',
                     encoding="utf-8")
    assert compute_options(load_config(plain)) == ""


def test_xla_on_a_max_pooling_network_is_refused_naming_the_key(tmp_path):
    """Under deterministic ops XLA has no max-pool gradient kernel: a clear error, not a crash."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3))
    h = keras.layers.MaxPooling2D(2)(keras.layers.Conv2D(4, 3, activation="relu")(inputs))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(
        keras.layers.GlobalAveragePooling2D()(h)))
    images, y = squares()
    with pytest.raises(PipelineError, match=r"train.jit_compile = true: XLA cannot compile.*"
                                            r"Set train.jit_compile = false"):
        train_classifier(model, images, y, recipe=TrainRecipe(jit_compile=True, epochs=1),
                         preprocess=scale, seed=0, workdir=tmp_path, progress=False)
