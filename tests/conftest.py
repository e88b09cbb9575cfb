"""Shared fixtures and the Hypothesis profiles. Helpers that tests import are in
`helpers.py` (the repository root and tests/ are on the path via pytest.ini)."""

from pathlib import Path

import pytest
from helpers import TINY_INPUT, tiny_manifest, tiny_model, tiny_predictions, write_class_folders, write_image
from hypothesis import settings as hypothesis_settings

# CI runs every property test on the same examples ("ci", the default): a run that
# passes passes again. `bench/fuzz_nightly.sh` picks "nightly": fresh random examples
# on each run, to find new bugs (each one found becomes a fixed regression test).
hypothesis_settings.register_profile("ci", derandomize=True, database=None)
hypothesis_settings.register_profile("nightly", derandomize=False, database=None)
hypothesis_settings.load_profile("ci")


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist turns the groups into node ids
def pytest_collection_modifyitems(config, items):
    """Groups for pytest-xdist (`-n ... --dist loadgroup`, in pytest.ini): each test module
    runs whole on one worker, so its module-scoped fixtures (trained bundles, built
    models) are made once; and the tests that drive a real browser run one after another
    on one worker, because the privacy test compares the repository's files before and
    after its flow and the other browser tests write screenshots there."""
    if not config.pluginmanager.hasplugin("xdist"):
        return
    for item in items:
        group = "browser" if item.get_closest_marker("browser") else item.path.stem
        item.add_marker(pytest.mark.xdist_group(group))


@pytest.fixture
def image_writer():
    """The `write_image` helper, for tests that prefer fixtures to imports."""
    return write_image


@pytest.fixture(scope="session")
def tiny_keras_model():
    """One tiny model for the whole session; tests must not change its weights."""
    return tiny_model()


@pytest.fixture
def tiny_bundle(tmp_path, tiny_keras_model) -> Path:
    """A complete, valid bundle folder written by `bundle.save_bundle`."""
    from medal_core.bundles import bundle

    history = tmp_path / "history.csv"
    history.write_text("epoch,loss,val_auc\n0,0.69,0.5\n1,0.6,0.7\n")
    return bundle.save_bundle(
        tmp_path / "models" / "tiny", tiny_keras_model, tiny_manifest(), tiny_predictions(), history
    )


@pytest.fixture(scope="session")
def trained_tiny_bundle(tmp_path_factory) -> Path:
    """A bundle written by `train.train` itself (custom CNN at 32×32, one epoch on 24
    synthetic images): 8 test-time views and a fitted temperature (no screen: the
    app's own was fitted on other roles).
    Shared by the whole session: copy it before changing any of its files."""
    from medal_core.stages.train import TrainConfig, train

    data_dir = write_class_folders(tmp_path_factory.mktemp("trained_data"), per_class=12)
    return train(
        TrainConfig(
            arch="custom_cnn",
            data=[str(data_dir)],
            input_size=TINY_INPUT,
            out=str(tmp_path_factory.mktemp("trained") / "tiny_trained"),
            epochs=1,
            batch_size=8,
        )
    )


@pytest.fixture(scope="session")
def untrained_architectures():
    """One 64-px model per architecture (random weights), built once for the whole session:
    EfficientNetB0 alone takes seconds to build. Tests may train them or change their
    batch-norm statistics (none depends on particular weights) but must restore any
    `trainable` flag they change."""
    import keras

    from medal_core.modeling import architectures

    keras.utils.set_random_seed(0)
    return {
        arch: architectures.build_model(arch, 64, weights=None)
        for arch in sorted(architectures.ARCHITECTURES)
    }
