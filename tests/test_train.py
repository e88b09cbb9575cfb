"""Training end to end on a tiny synthetic dataset, resuming, and evaluating the bundle."""

import csv
import json
from dataclasses import asdict

import numpy as np
import pytest
from helpers import write_class_folders

from medal_core.bundles import bundle
from medal_core.data import datasets as data
from medal_core.evaluation import decision, metrics
from medal_core.stages import evaluate
from medal_core.stages.train import TrainConfig, TrainingError, class_weights, parse_args, train

# Keras notes that fit()'s shuffle flag does not apply to a tf.data pipeline (it shuffles itself).
pytestmark = pytest.mark.filterwarnings("ignore:`shuffle=True` was passed:UserWarning")


@pytest.fixture(scope="module")
def dataset_dir(tmp_path_factory):
    """20 dark 'benign' and 20 bright 'malignant' 32×32 images, no split folders."""
    return write_class_folders(tmp_path_factory.mktemp("data"), per_class=20)


@pytest.fixture(scope="module")
def config(dataset_dir, tmp_path_factory) -> TrainConfig:
    return TrainConfig(
        arch="custom_cnn",
        data=[str(dataset_dir)],
        out=str(tmp_path_factory.mktemp("models") / "b"),
        input_size=32,
        epochs=2,
        batch_size=8,
        patience=5,
    )


@pytest.fixture(scope="module")
def trained(config):
    """Train once for the whole module; returns the bundle folder."""
    return train(config)


def test_training_writes_a_bundle_that_loads(trained, config, dataset_dir):
    folder = trained
    loaded = bundle.load_bundle(folder)
    manifest = loaded.manifest
    assert folder == bundle.find_bundles(folder.parent)[0]
    assert (manifest["name"], manifest["architecture"], manifest["input_size"]) == ("b", "custom_cnn", 32)
    assert manifest["training"]["config"] == asdict(config)
    counts = {
        role: manifest["data"]["roles"][role]["images"]
        for role in ("train", "selection", "calibration", "report")
    }
    # No official validation split: 70/10/10/10 of each class, by lesion (here by file).
    assert sum(counts.values()) == 40 and 27 <= counts["train"] <= 29
    assert all(3 <= counts[role] <= 5 for role in ("selection", "calibration", "report"))
    assert len(loaded.predictions.labels) == counts["calibration"]
    report = bundle.read_predictions(folder / bundle.REPORT_PREDICTIONS_FILE)
    assert len(report.labels) == counts["report"] and set(report.sources) == {dataset_dir.name}
    assert not set(report.image_ids) & set(loaded.predictions.image_ids)
    assert manifest["temperature"] > 0
    with open(folder / bundle.HISTORY_FILE, newline="") as handle:
        history = list(csv.DictReader(handle))
    assert [row["epoch"] for row in history] == ["0", "1"]
    assert {"loss", "auc", "val_loss", "val_auc"} <= set(history[0])


def test_threshold_reaches_target_sensitivity_on_stored_predictions(trained):
    loaded = bundle.load_bundle(trained, load_model=False)
    p = loaded.predictions
    threshold = loaded.manifest["threshold"]
    assert threshold["target_sensitivity"] == 0.95
    rule = decision.rule_counts(
        p.labels, p.probabilities, loaded.threshold, loaded.manifest["decision"]["band_ratio"], p.no_estimate
    )
    assert rule["melanomas_onward"]["share"] >= 0.95  # the app's own sensitivity
    assert (
        loaded.manifest["decision"]["rule"]["calibration"]["melanomas_onward"]["count"]
        == rule["melanomas_onward"]["count"]
    )
    assert p.no_estimate is not None and len(p.no_estimate) == len(p.labels)
    offset = loaded.manifest["logit_offset"]
    assert offset == pytest.approx(0.0)  # the synthetic data is balanced: equal class weights
    np.testing.assert_allclose(p.probabilities, metrics.sigmoid((p.logits - offset) / loaded.temperature))
    assert metrics.roc_auc(p.labels, p.probabilities) == pytest.approx(
        loaded.manifest["validation_metrics"]["roc_auc"]["value"], abs=1e-12
    )


def test_rerunning_the_same_command_resumes_instead_of_retraining(trained, config):
    folder = trained
    before = bundle.load_bundle(folder, load_model=False).predictions
    work = folder / "checkpoints"
    assert (work / "scratch" / "done").is_file()

    assert train(config) == folder

    after = bundle.load_bundle(folder)
    np.testing.assert_array_equal(after.predictions.logits, before.logits)
    assert list(after.manifest["training"]["phases"]) == ["scratch"]
    assert after.manifest["training"]["phases"]["scratch"]["best_epoch"] in (0, 1)
    with open(work / "history.csv") as handle:
        assert len(handle.readlines()) == 3  # header and 2 epochs: nothing was retrained


def test_evaluate_writes_a_json_report_matching_recomputed_metrics(trained, dataset_dir, tmp_path):
    folder = trained
    out = tmp_path / "report.json"
    evaluate.main(["--bundle", str(folder), "--data", str(dataset_dir), "--split", "all", "--json", str(out)])
    report = json.loads(out.read_text())
    assert (report["n"], report["malignant"], report["split"]) == (40, 20, "all")

    loaded = bundle.load_bundle(folder)
    dataset = data.load_dataset(dataset_dir)
    logits = evaluate.dataset_logits(loaded.model, dataset, views=loaded.manifest["test_time_views"])
    probabilities = metrics.sigmoid((logits - loaded.manifest["logit_offset"]) / loaded.temperature)
    assert report["roc_auc"]["value"] == pytest.approx(
        metrics.roc_auc(dataset.labels, probabilities), abs=1e-9
    )
    assert report["roc_auc"]["low"] <= report["roc_auc"]["value"] <= report["roc_auc"]["high"]
    assert report["threshold"] == loaded.threshold


def test_evaluate_on_the_bundles_roles_reproduces_the_manifest(trained, dataset_dir, tmp_path):
    folder = trained
    report = evaluate.main(
        ["--bundle", str(folder), "--data-root", ".", "--json", str(tmp_path / "roles.json")]
    )
    manifest = bundle.read_manifest(folder)
    for role, key in (("report", "report_metrics"), ("calibration", "validation_metrics")):
        figures = report["sets"][f"{role} (all)"]
        assert figures["n"] == manifest[key]["n"] == manifest["data"]["roles"][role]["images"]
        assert figures["roc_auc"]["value"] == pytest.approx(manifest[key]["roc_auc"]["value"], abs=1e-6)


def test_resuming_with_another_configuration_is_refused(trained, config):
    from dataclasses import replace

    with pytest.raises(
        TrainingError,
        match=r"another run \(seed: 42 -> 2; the train images "
        r"differ; the selection images differ\)",
    ):
        train(replace(config, seed=2))
    with pytest.raises(TrainingError, match=r"epochs: 2 -> 3"):
        train(replace(config, epochs=3))


def test_resuming_may_change_only_the_time_budget(trained, config):
    from dataclasses import replace

    assert train(replace(config, max_minutes=30.0)) == trained


def test_a_second_stage_starts_from_a_bundle_of_the_same_roles(trained, config, tmp_path, monkeypatch):
    from dataclasses import replace

    from medal_core.stages import train as training

    # No epochs run: the bundle written is the model the second stage starts from.
    monkeypatch.setattr(training, "run_phase", lambda *args, **kwargs: 0.0)
    second = train(replace(config, out=str(tmp_path / "second"), init_from=str(trained)))
    first, after = bundle.load_bundle(trained), bundle.load_bundle(second)
    weights = after.manifest["backbone_weights"]
    assert (weights["source"], weights["model_sha256"]) == ("bundle", first.manifest["model_sha256"])
    assert after.manifest["training"]["config"]["init_from"] == str(trained)
    np.testing.assert_allclose(after.predictions.logits, first.predictions.logits, atol=1e-5)
    fresh = train(replace(config, out=str(tmp_path / "fresh")))
    assert not np.allclose(bundle.load_bundle(fresh).predictions.logits, first.predictions.logits, atol=1e-2)


def test_a_second_stage_may_go_on_at_another_input_size(trained, config, tmp_path, monkeypatch):
    from dataclasses import replace

    from medal_core.stages import train as training

    monkeypatch.setattr(training, "run_phase", lambda *args, **kwargs: 0.0)
    larger = bundle.load_bundle(
        train(replace(config, out=str(tmp_path / "larger"), init_from=str(trained), input_size=48))
    )
    assert larger.manifest["input_size"] == 48 and larger.model.input_shape[1:] == (48, 48, 3)
    for kept, started in zip(larger.model.get_weights(), bundle.load_bundle(trained).model.get_weights()):
        np.testing.assert_array_equal(kept, started)


def test_a_second_stage_from_another_architecture_or_other_roles_is_refused(trained, config, tmp_path):
    from dataclasses import replace

    with pytest.raises(TrainingError, match="is a custom_cnn; this run trains a mobilenet"):
        train(replace(config, arch="mobilenet", out=str(tmp_path / "a"), init_from=str(trained)))
    with pytest.raises(TrainingError, match="other train, selection, calibration, report images"):
        train(replace(config, seed=3, out=str(tmp_path / "b"), init_from=str(trained)))


def test_evaluate_exits_with_a_message_on_a_bad_bundle(tmp_path, dataset_dir):
    with pytest.raises(SystemExit, match="error: model bundle not found"):
        evaluate.main(["--bundle", str(tmp_path / "none"), "--data", str(dataset_dir)])


def test_class_weights_average_one_and_favour_the_minority():
    labels = np.array([0] * 80 + [1] * 20)
    weights = class_weights(labels)
    assert weights == pytest.approx({0: 0.625, 1: 2.5})
    assert np.mean([weights[label] for label in labels]) == pytest.approx(1.0)
    assert class_weights(np.array([0, 1, 0, 1])) == {0: 1.0, 1: 1.0}


def test_class_weights_follow_the_average_epoch_when_sources_are_thinned():
    labels = np.array([0] * 50 + [1] * 50)
    draw = np.where(np.arange(100) < 50, 1.0, 0.5)  # malignant images drawn half as often
    weights = class_weights(labels, draw)
    assert weights == pytest.approx({0: 0.75, 1: 1.5})


def test_parse_args_maps_cli_flags_to_the_config():
    config = parse_args(
        [
            "--arch",
            "mobilenet",
            "--data",
            "d",
            "--data",
            "e",
            "--out",
            "models/m",
            "--weights",
            "w.weights.h5",
            "--input-size",
            "224",
            "--batch-size",
            "16",
            "--head-epochs",
            "2",
            "--epochs",
            "5",
            "--head-lr",
            "0.002",
            "--backbone-lr",
            "1e-4",
            "--patience",
            "3",
            "--label-smoothing",
            "0.1",
            "--max-minutes",
            "2.5",
            "--test-time-views",
            "1",
            "--seed",
            "7",
            "--average-last",
            "4",
            "--cutmix",
            "0.5",
        ]
    )
    assert config == TrainConfig(
        arch="mobilenet",
        data=["d", "e"],
        out="models/m",
        weights="w.weights.h5",
        input_size=224,
        batch_size=16,
        head_epochs=2,
        epochs=5,
        head_lr=0.002,
        backbone_lr=1e-4,
        patience=3,
        label_smoothing=0.1,
        max_minutes=2.5,
        test_time_views=1,
        seed=7,
        average_last=4,
        cutmix=0.5,
    )
    recipe = parse_args(["--arch", "mobilenet", "--recipe", "r.json", "--data-root", "x", "--out", "o"])
    assert (recipe.recipe, recipe.data_root, recipe.data) == ("r.json", "x", [])


def test_parse_args_defaults_and_refusals():
    config = parse_args(["--arch", "custom_cnn", "--data", "d", "--out", "o"])
    assert config == TrainConfig(arch="custom_cnn", data=["d"], out="o")
    with pytest.raises(SystemExit):
        parse_args(["--arch", "resnet", "--data", "d", "--out", "o"])
    with pytest.raises(SystemExit):
        parse_args(["--arch", "custom_cnn", "--data", "d"])
    with pytest.raises(SystemExit):
        parse_args(["--arch", "custom_cnn", "--out", "o"])  # no data at all


def test_an_interrupted_two_rate_fit_resumes_both_optimizers(tmp_path):
    """BackupAndRestore must give back the head's and the backbone's Adam state: a
    resumed run that silently restarted one optimizer would not be the same run."""
    import warnings

    import keras

    from medal_core.modeling import architectures as models
    from medal_core.stages.train import TwoRateTrainer

    def make_trainer():
        # Any model works: its non-head layers count as the backbone.
        model = models.build_custom_cnn(input_size=32, filters=(4, 8))
        models.set_backbone_trainable(model, True)
        trainer = TwoRateTrainer(model, keras.optimizers.Adam(1e-4))
        trainer.compile(optimizer=keras.optimizers.Adam(1e-3), loss="binary_crossentropy")
        trainer.build((None, 32, 32, 3))
        return trainer

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 2, (8, 1)).astype("float32")
    backup = keras.callbacks.BackupAndRestore(str(tmp_path / "backup"), delete_checkpoint=False)
    first = make_trainer()
    first.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[backup])

    resumed = make_trainer()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        # Same backup folder, same epochs: the callback restores the state, trains no more.
        resumed.fit(
            x,
            y,
            epochs=2,
            batch_size=4,
            verbose=0,
            callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "backup"))],
        )
    assert not [w for w in caught if "Skipping variable loading" in str(w.message)]
    for before, after in (
        (first.optimizer, resumed.optimizer),
        (first.backbone_optimizer, resumed.backbone_optimizer),
    ):
        assert int(after.iterations.numpy()) == int(before.iterations.numpy()) == 4
        for a, b in zip(before.variables, after.variables):
            np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_the_threshold_can_be_chosen_on_one_source_of_the_calibration_set(trained, dataset_dir, tmp_path):
    import shutil

    from medal_core.data import roles
    from medal_core.stages import calibrate

    folder = tmp_path / "b"
    shutil.copytree(trained, folder, ignore=shutil.ignore_patterns("checkpoints"))
    assignment = roles.bundle_roles(bundle.read_manifest(folder), ".")
    with pytest.raises(data.DatasetError, match="no calibration image comes from"):
        calibrate.calibrate_bundle(folder, assignment, ("elsewhere",))
    entry = calibrate.calibrate_bundle(folder, assignment, (dataset_dir.name,))
    assert entry["threshold_set"]["sources"] == [dataset_dir.name]
    manifest = bundle.read_manifest(folder)
    assert dataset_dir.name in manifest["threshold"]["method"]


def test_training_phases_of_transfer_and_scratch_models():
    from medal_core.stages.train import Phase, TrainConfig, training_phases

    config = TrainConfig(arch="mobilenet", data=["d"], out="o", head_epochs=2, epochs=5, head_lr=1e-3)
    assert training_phases(config, is_transfer=True) == [
        Phase("head", 2, 1e-3, None),
        Phase("finetune", 5, 1e-4, config.backbone_lr),
    ]
    no_head = TrainConfig(arch="mobilenet", data=["d"], out="o", head_epochs=0, epochs=5, head_lr=1e-3)
    assert [phase.name for phase in training_phases(no_head, is_transfer=True)] == ["finetune"]
    assert training_phases(config, is_transfer=False) == [Phase("scratch", 5, 1e-3, None)]


def test_average_weights_is_the_element_wise_mean_of_the_saved_epochs(tmp_path):
    from medal_core.modeling import architectures as models
    from medal_core.stages.train import average_weights

    model = models.build_model("custom_cnn", 32, weights=None)
    saved = []
    for epoch, value in enumerate((1.0, 2.0, 6.0)):
        model.set_weights(
            [np.full(w.shape, value * (i + 1), np.float32) for i, w in enumerate(model.get_weights())]
        )
        saved.append(tmp_path / f"epoch_{epoch:03d}.weights.h5")
        model.save_weights(saved[-1])
    mean = average_weights(model, saved)
    assert [w.shape for w in mean] == [w.shape for w in model.get_weights()]
    for i, weight in enumerate(mean):
        np.testing.assert_allclose(weight, 3.0 * (i + 1))
    with pytest.raises(TrainingError, match="no weights to average"):
        average_weights(model, [])


def test_only_the_last_consecutive_epochs_are_averaged(tmp_path):
    from medal_core.stages.train import EPOCH_WEIGHTS, last_epochs

    for epoch in (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10):
        (tmp_path / EPOCH_WEIGHTS.format(epoch)).write_bytes(b"")
    assert [f.name for f in last_epochs(tmp_path, 3)] == [EPOCH_WEIGHTS.format(e) for e in (8, 9, 10)]
    assert len(last_epochs(tmp_path, 20)) == 11  # fewer epochs ran than asked for: all of them
    (tmp_path / EPOCH_WEIGHTS.format(9)).unlink()
    with pytest.raises(TrainingError, match=r"skip epochs \(\[7, 8, 10\]\)"):
        last_epochs(tmp_path, 3)
    with pytest.raises(TrainingError, match="no epoch weights"):
        last_epochs(tmp_path / "nowhere", 3)


@pytest.mark.parametrize(
    "best_score, averaged_score, chosen",
    [(0.8, 0.9, "average"), (0.9, 0.8, "best_epoch"), (0.85, 0.85, "best_epoch")],
)
def test_the_better_of_best_epoch_and_average_is_kept(tmp_path, best_score, averaged_score, chosen):
    from medal_core.modeling import architectures as models
    from medal_core.stages.train import choose_weight_average

    model = models.build_model("custom_cnn", 32, weights=None)
    files = []
    for epoch, value in enumerate((1.0, 3.0)):
        model.set_weights([np.full(w.shape, value, np.float32) for w in model.get_weights()])
        files.append(tmp_path / f"epoch_{epoch:03d}.weights.h5")
        model.save_weights(files[-1])
    best = [np.full(w.shape, 7.0, np.float32) for w in model.get_weights()]
    model.set_weights(best)
    scores = iter((best_score, averaged_score))  # the best epoch is scored first

    record = choose_weight_average(model, files, lambda candidate: next(scores))
    assert record == {
        "epochs_averaged": [0, 1],
        "selection_auc": {"best_epoch": best_score, "average": averaged_score},
        "chosen": chosen,
    }
    held = 2.0 if chosen == "average" else 7.0
    assert all(np.allclose(w, held) for w in model.get_weights())


def test_weight_averaging_keeps_every_fine_tuning_epoch_and_the_better_candidate(
    config, dataset_dir, tmp_path
):
    """`--average-last 2` on a transfer model: every fine-tuning epoch's weights are kept,
    the last two are averaged, and the bundle holds whichever of the average and the
    best epoch scored higher on the selection set, as its manifest says."""
    from dataclasses import replace

    from medal_core.modeling import architectures as models
    from medal_core.stages.train import average_weights, epoch_weight_files

    run = replace(
        config,
        arch="mobilenet",
        out=str(tmp_path / "swa"),
        head_epochs=1,
        epochs=3,
        average_last=2,
        patience=9,
    )
    folder = train(run)
    files = epoch_weight_files(folder / "checkpoints" / "finetune")
    assert [f.name for f in files] == [f"epoch_{e:03d}.weights.h5" for e in range(3)]
    assert not epoch_weight_files(folder / "checkpoints" / "head")  # only the phase that is averaged
    averaging = bundle.read_manifest(folder)["training"]["weight_averaging"]
    assert averaging["epochs_averaged"] == [1, 2] and averaging["requested"] == 2
    assert averaging["views"] == run.test_time_views
    scores = averaging["selection_auc"]
    assert averaging["chosen"] == ("average" if scores["average"] > scores["best_epoch"] else "best_epoch")

    scratch = models.build_model("mobilenet", 32, weights=None)
    if averaging["chosen"] == "average":
        expected = average_weights(scratch, files[-2:])
    else:
        scratch.load_weights(folder / "checkpoints" / "finetune" / "best.weights.h5")
        expected = scratch.get_weights()
    for kept, wanted in zip(bundle.load_bundle(folder).model.get_weights(), expected):
        np.testing.assert_allclose(kept, wanted, atol=1e-6)
    # The same command again resumes the finished run: the same files, the same choice.
    assert train(run) == folder
    assert bundle.read_manifest(folder)["training"]["weight_averaging"] == averaging


def test_weight_averaging_is_refused_for_a_model_that_trains_its_batch_norms(config, tmp_path):
    from dataclasses import replace

    with pytest.raises(TrainingError, match="--average-last needs frozen batch norms"):
        train(replace(config, out=str(tmp_path / "scratch_swa"), average_last=2))
    for pointless in (-3, 1):
        with pytest.raises(TrainingError, match="give 0 .no averaging. or 2 or more epochs"):
            train(replace(config, arch="mobilenet", out=str(tmp_path / "n"), average_last=pointless))


def test_runs_fingerprinted_before_weight_averaging_existed_still_resume(config):
    """A setting added later is left out of the fingerprint at its default: the runs
    fingerprinted before it existed keep their fingerprint."""
    from dataclasses import replace

    from medal_core.data import roles
    from medal_core.stages.train import run_fingerprint

    assignment = roles.assign_roles(config.recipe_object(), config.data_root)
    assert "average_last" not in run_fingerprint(config, assignment)["config"]
    assert run_fingerprint(replace(config, average_last=4), assignment)["config"]["average_last"] == 4
    assert "cutmix" not in run_fingerprint(config, assignment)["config"]
    assert run_fingerprint(replace(config, cutmix=0.5), assignment)["config"]["cutmix"] == 0.5


def test_a_cutmix_run_trains_on_soft_labels_and_records_its_setting(config, tmp_path):
    """CutMix makes labels soft and brings sample weights: a run with it goes through to
    its bundle, whose manifest says it used CutMix; out-of-range values are refused."""
    from dataclasses import replace

    folder = train(replace(config, out=str(tmp_path / "cutmix"), epochs=1, cutmix=0.5))
    assert bundle.read_manifest(folder)["training"]["config"]["cutmix"] == 0.5
    for wrong in (-0.1, 1.5):
        with pytest.raises(TrainingError, match="--cutmix"):
            train(replace(config, out=str(tmp_path / "wrong"), cutmix=wrong))
