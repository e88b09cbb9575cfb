"""The flat ensemble: its logit is exactly the members' mean, its Grad-CAM the members'
maps summed, and the stage that builds the bundle refuses members that do not belong
together and an ensemble its selection set does not choose."""

import dataclasses

import keras
import numpy as np
import pytest
from helpers import write_class_folders

from medal_core.bundles import bundle
from medal_core.bundles.files import load_keras_model
from medal_core.explain.gradcam import GradCAM, activations_and_logit
from medal_core.modeling import architectures as models
from medal_core.modeling.ensembling import merge_members
from medal_core.modeling.runner import ModelRunner
from medal_core.stages import ensemble as stage
from medal_views import model_card

pytestmark = [
    pytest.mark.filterwarnings("ignore:`shuffle=True` was passed:UserWarning"),
    pytest.mark.filterwarnings("ignore:Your input ran out of data:UserWarning"),
]

SIZE = 64
ARCHS = ["mobilenet", "mobilenetv2"]


def _perturbed(model: keras.Model, seed: int) -> keras.Model:
    """`model` with seeded batch-norm statistics and head weights, so that a weight copied
    to the wrong place (or not at all) changes the logits."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    1 + 0.1 * rng.standard_normal(gamma.shape),
                    0.1 * rng.standard_normal(beta.shape),
                    0.1 * rng.standard_normal(mean.shape),
                    1 + 0.2 * rng.random(variance.shape),
                ]
            )
    kernel, bias = model.get_layer(models.LOGIT_LAYER).get_weights()
    model.get_layer(models.LOGIT_LAYER).set_weights(
        [rng.standard_normal(kernel.shape) * 0.5, rng.standard_normal(bias.shape)]
    )
    return model


# The member lists whose merged graph is checked in full: MobileNet 0.75 with MobileNetV2;
# the shipped default, the colour-constant MobileNetV2 with the plain one (one backbone
# twice, so the second one's layers are renamed, and a scaling layer of its own after the
# colour constancy); and those two with a second colour-constant run (one architecture
# twice, so the third member's key is `mobilenetv2_cc_2`). DenseNet121 (another input
# preprocessing) with MobileNetV2 has a test of its own below: its graph takes seconds per
# pass, and only its preprocessing differs.
MEMBER_LISTS = [ARCHS, ["mobilenetv2_cc", "mobilenetv2"], ["mobilenetv2_cc", "mobilenetv2", "mobilenetv2_cc"]]


@pytest.fixture(scope="module", params=MEMBER_LISTS, ids="+".join)
def pair(request) -> list[str]:
    """The members' architectures, in member order (two or three, despite the name)."""
    return request.param


def _perturbed_members(pair: list[str]) -> list[keras.Model]:
    return [_perturbed(models.build_model(arch, SIZE), seed) for seed, arch in enumerate(pair)]


@pytest.fixture(scope="module")
def members(pair):
    return _perturbed_members(pair)


@pytest.fixture(scope="module")
def merged(members, pair):
    return merge_members(members, pair)


# Both members' pooled features side by side (MobileNet 0.75: 768, MobileNetV2: 1280
# channels).
WIDTH = {
    "mobilenet+mobilenetv2": 768 + 1280,
    "mobilenetv2_cc+mobilenetv2": 1280 + 1280,
    "mobilenetv2_cc+mobilenetv2+mobilenetv2_cc": 3 * 1280,
}


def _preprocessing_layer_names(model: keras.Model) -> list[str]:
    """Sorted names of the layers that scale or standardise a member's input."""
    kinds = (keras.layers.Rescaling, keras.layers.Normalization)
    return sorted(layer.name for layer in model.layers if isinstance(layer, kinds))


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(7).integers(0, 256, (3, SIZE, SIZE, 3)).astype(np.float32)


def test_merged_logit_is_the_mean_of_the_members_logits(members, merged, pair, images):
    member_runners = [ModelRunner(m, fold=False) for m in members]
    ensemble_runner = ModelRunner(merged)  # folded, as the app runs it
    for views in (1, 8):
        member_logits = [runner(images, views)[0] for runner in member_runners]
        for other in member_logits[1:]:
            assert not np.allclose(member_logits[0], other)  # a real mean is tested
        ensemble_logits, features = ensemble_runner(images, views)
        np.testing.assert_allclose(ensemble_logits, np.mean(member_logits, axis=0), atol=1e-4)
    assert features.shape == (3, WIDTH["+".join(pair)])


def test_a_member_that_standardises_its_input_merges_exactly(images):
    """DenseNet121 standardises with ImageNet's channel statistics where the MobileNets
    scale to [-1, 1]: each member reads its own preprocessing in the merged graph, so the
    logit is still the members' mean, and its pooled features sit beside the other's."""
    pair = ["densenet121", "mobilenetv2"]
    members = _perturbed_members(pair)
    merged = merge_members(members, pair)
    assert _preprocessing_layer_names(merged) == ["imagenet_standardise", "to_unit_interval", "to_unit_range"]
    member_logits = [ModelRunner(m, fold=False)(images)[0] for m in members]
    assert not np.allclose(member_logits[0], member_logits[1])
    ensemble_logits, features = ModelRunner(merged)(images)
    np.testing.assert_allclose(ensemble_logits, np.mean(member_logits, axis=0), atol=1e-4)
    assert features.shape == (3, 1024 + 1280)


def test_ensemble_is_one_flat_graph_that_loads_in_safe_mode(merged, pair, images, tmp_path):
    assert not any(isinstance(layer, keras.Model) for layer in merged.layers)
    assert merged.get_layer(models.ENSEMBLE_MAPS).output.shape[1:] == (2, 2, WIDTH["+".join(pair)])
    # One preprocessing layer per kind: both MobileNets read one `to_unit_range`.
    expected = {
        "mobilenet+mobilenetv2": ["to_unit_range"],
        "mobilenetv2_cc+mobilenetv2": ["colour_constant_to_unit_range", "to_unit_range"],
        "mobilenetv2_cc+mobilenetv2+mobilenetv2_cc": ["colour_constant_to_unit_range", "to_unit_range"],
    }
    assert _preprocessing_layer_names(merged) == expected["+".join(pair)]
    merged.save(tmp_path / "model.keras")
    loaded = load_keras_model(tmp_path / "model.keras")
    np.testing.assert_allclose(ModelRunner(loaded)(images)[0], ModelRunner(merged)(images)[0], atol=1e-5)


def test_ensemble_grad_cam_is_the_mean_of_the_members_raw_maps(members, merged, pair, images):
    def raw_cam(model, layer):
        """Grad-CAM before its ReLU and scaling: channels weighted by their mean gradient."""
        activations, grads, _ = activations_and_logit(model, layer).gradients(images, np.float32(1.0))
        weights = grads.numpy().mean(axis=(1, 2))
        return np.einsum("nhwc,nc->nhw", activations.numpy(), weights)

    expected = np.mean(
        [raw_cam(m, models.ARCHITECTURES[arch].gradcam_layer) for m, arch in zip(members, pair)], axis=0
    )
    np.testing.assert_allclose(raw_cam(merged, models.ENSEMBLE_MAPS), expected, rtol=1e-3, atol=1e-5)
    heatmap = GradCAM(merged, models.ENSEMBLE_MAPS)(images[0])
    assert heatmap.shape == (SIZE, SIZE) and 0 <= heatmap.min() and heatmap.max() <= 1


def test_a_second_member_of_one_architecture_gets_its_own_layer_names(merged, pair):
    assert models.member_prefixes(["mobilenetv2", "mobilenet", "mobilenetv2"]) == ["", "", "mobilenetv2_2_"]
    assert models.member_keys(["mobilenetv2", "mobilenetv2"]) == ["mobilenetv2", "mobilenetv2_2"]
    # The colour-constant MobileNetV2 shares the plain one's backbone, so its layers are
    # prefixed too, whichever comes first.
    assert models.member_prefixes(["mobilenetv2", "mobilenetv2_cc"]) == ["", "mobilenetv2_cc_"]
    assert models.member_prefixes(["mobilenetv2_cc", "mobilenetv2"]) == ["", "mobilenetv2_"]
    assert models.member_keys(["mobilenetv2_cc", "mobilenetv2"]) == ["mobilenetv2_cc", "mobilenetv2"]
    names = [layer.name for layer in merged.layers]
    assert len(names) == len(set(names))
    if pair[:2] == ["mobilenetv2_cc", "mobilenetv2"]:  # the first keeps Keras' names, later ones are prefixed
        assert {"Conv1", "out_relu", "mobilenetv2_Conv1", "mobilenetv2_out_relu"} <= set(names)
        assert "colour_constancy" in names
    if len(pair) == 3:  # the second colour-constant run: its key, and one colour constancy for both
        assert models.member_prefixes(pair) == ["", "mobilenetv2_", "mobilenetv2_cc_2_"]
        assert {"mobilenetv2_cc_2_Conv1", "mobilenetv2_cc_2_out_relu"} <= set(names)
        assert sum("colour_constancy" in name for name in names) == 1


@pytest.mark.parametrize(
    "archs", [["mobilenet"], ["mobilenet", "custom_cnn"], ["efficientnetb0", "mobilenet"]]
)
def test_build_ensemble_refuses_members_it_cannot_hold(archs):
    with pytest.raises(ValueError, match="two or more members of the architectures"):
        models.build_ensemble(archs, SIZE)


def test_build_ensemble_refuses_members_whose_layer_names_clash():
    with pytest.raises(ValueError, match="densenet121 and mobilenet share layer names"):
        models.build_ensemble(["mobilenet", "densenet121"], SIZE)
    # The declared clash is real: Keras itself refuses the two backbones in one graph.
    inputs = keras.Input((SIZE, SIZE, 3))
    both = [models.ENSEMBLE_MEMBERS[arch] for arch in ("mobilenet", "densenet121")]
    maps = [member.backbone(member.preprocess(inputs)).output for member in both]
    with pytest.raises(ValueError, match="conv1_bn"):
        keras.Model(inputs, keras.layers.Concatenate()(maps))


def test_merge_refuses_a_member_of_another_shape():
    narrower = models.build_mobilenet(SIZE, alpha=0.5)
    v2 = models.build_mobilenetv2(SIZE)
    with pytest.raises(ValueError, match="(?i)shape"):  # Keras' own set_weights message
        merge_members([narrower, v2], ARCHS)
    with pytest.raises(ValueError, match="input sizes"):
        merge_members([models.build_mobilenet(SIZE), models.build_mobilenetv2(96)], ARCHS)


# ------------------------------------------------------------------- the stage


@pytest.fixture(scope="module")
def trained_members(tmp_path_factory):
    """A mobilenet and a mobilenetv2 bundle trained by `train` (32 px, one head and one
    fine-tuning epoch, random initial weights) on the same synthetic images and roles."""
    from medal_core.stages.train import TrainConfig, train

    data_dir = write_class_folders(tmp_path_factory.mktemp("ensemble_data"), per_class=16)
    root = tmp_path_factory.mktemp("members")
    return [
        train(
            TrainConfig(
                arch=arch,
                data=[str(data_dir)],
                out=str(root / arch),
                input_size=32,
                head_epochs=1,
                epochs=1,
                batch_size=8,
            )
        )
        for arch in ARCHS
    ]


def test_stage_refuses_an_ensemble_its_selection_set_does_not_choose(trained_members, tmp_path, monkeypatch):
    measured = stage.selection_aucs

    def ensemble_no_better(runners, selection, views):
        aucs, logits = measured(runners, selection, views)
        return {**aucs, models.ENSEMBLE: min(aucs[a] for a in ARCHS)}, logits

    monkeypatch.setattr(stage, "selection_aucs", ensemble_no_better)
    out = tmp_path / "ensemble"
    with pytest.raises(stage.EnsembleError, match="does not beat its best member"):
        stage.build_ensemble_bundle(trained_members, out, tmp_path)
    assert not out.exists()


def test_stage_writes_an_ensemble_bundle_the_app_can_load(trained_members, tmp_path):
    data_root = tmp_path  # not read: the default recipe names the data folder itself
    out = tmp_path / "models" / "ensemble"
    folder = stage.build_ensemble_bundle(trained_members, out, data_root, keep_if_not_better=True)
    loaded = bundle.load_bundle(folder)
    manifest = loaded.manifest
    assert manifest["architecture"] == models.ENSEMBLE
    assert manifest["gradcam_layer"] == models.ENSEMBLE_MAPS
    record = manifest["ensemble"]
    assert [m["name"] for m in record["members"]] == ARCHS
    assert [m["key"] for m in record["members"]] == ARCHS
    assert set(record["selection_roc_auc"]) == {*ARCHS, models.ENSEMBLE}
    assert record["max_logit_difference_from_members_mean"] < 1e-3
    first = bundle.read_manifest(trained_members[0])
    assert manifest["data"]["roles"] == first["data"]["roles"]
    offsets = [bundle.read_manifest(m)["logit_offset"] for m in trained_members]
    assert manifest["logit_offset"] == pytest.approx(np.mean(offsets))
    assert "rule" in manifest["decision"] and manifest["temperature"] > 0
    image = np.full((32, 32, 3), 128, np.float32)
    assert GradCAM(loaded.model, manifest["gradcam_layer"])(image).shape == (32, 32)
    (card,) = model_card._ensemble_lines(record)
    assert "the mean of the logits of mobilenet and mobilenetv2" in card
    assert f"ensemble {record['selection_roc_auc']['ensemble']:.3f}" in card


def test_a_second_stage_of_a_transfer_model_skips_its_head_phase(trained_members, tmp_path, monkeypatch):
    from medal_core.stages import train as training

    phases = []
    monkeypatch.setattr(training, "run_phase", lambda name, *args, **kwargs: phases.append(name) or 0.0)
    first = bundle.read_manifest(trained_members[0])
    config = training.TrainConfig(**{**first["training"]["config"], "out": str(tmp_path / "second")})
    second = training.train(
        dataclasses.replace(config, init_from=str(trained_members[0]), head_epochs=0, weights=None)
    )
    assert phases == ["finetune"]
    assert bundle.read_manifest(second)["backbone_weights"]["source"] == "bundle"
    with pytest.raises(training.TrainingError, match="not both"):
        training.train(dataclasses.replace(config, init_from=str(trained_members[0]), weights="imagenet"))


def test_stage_refuses_members_of_other_roles_or_one_model_twice(trained_members):
    members = [bundle.load_bundle(f, load_model=False) for f in trained_members]
    assert stage.check_members(members) == ARCHS
    other = dataclasses.replace(members[1], manifest=_with_report_ids(members[1].manifest, "0" * 64))
    with pytest.raises(stage.EnsembleError, match="different report images"):
        stage.check_members([members[0], other])
    with pytest.raises(stage.EnsembleError, match="holds the same model as .* must differ"):
        stage.check_members([members[0], members[0]])
    # Two runs of one architecture (other weights, the same roles) may be members.
    second_run = dataclasses.replace(members[1], manifest={**members[1].manifest, "model_sha256": "f" * 64})
    assert stage.check_members([members[1], second_run]) == ["mobilenetv2", "mobilenetv2"]
    with pytest.raises(stage.EnsembleError, match="at least two"):
        stage.check_members(members[:1])


def test_cli_reports_a_refusal_as_an_error_message(trained_members, tmp_path, capsys):
    with pytest.raises(SystemExit, match="error: .*must differ"):
        stage.main(
            [
                "--member",
                str(trained_members[0]),
                "--member",
                str(trained_members[0]),
                "--data-root",
                str(tmp_path),
                "--out",
                str(tmp_path / "e"),
            ]
        )


def _with_report_ids(manifest: dict, ids_sha256: str) -> dict:
    roles = {**manifest["data"]["roles"], "report": {**manifest["data"]["roles"]["report"]}}
    roles["report"]["ids_sha256"] = ids_sha256
    return {**manifest, "data": {**manifest["data"], "roles": roles}}
