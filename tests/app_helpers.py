"""Helpers for the app tests: synthetic lesion-like images and a folder of tiny,
quickly built model bundles (no training)."""

from __future__ import annotations

import dataclasses
import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

BUNDLE_INPUT = 48
BUNDLE_FILTERS = (8, 16)
GRADCAM_LAYER = "block2_gelu"
OOD_DRAW_SIZES = (128, 256, 320, 700)  # synthetic lesions the test screen is fitted on
SCREEN_INPUT = 56  # not BUNDLE_INPUT: the Predictor resizes for the screen separately


def synthetic_lesion(seed: int = 0, size: int = 256) -> np.ndarray:
    """A dermoscopy-like picture: textured skin with a dark, irregular brown blob in the
    middle and a dark vignette. uint8 RGB (size, size, 3)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size - 0.5
    skin = np.array([214, 160, 134], float) + rng.normal(0, 6, 3)
    image = np.ones((size, size, 3)) * skin
    image += rng.normal(0, 9, (size, size, 1))  # skin texture
    angle = np.arctan2(yy, xx)
    radius = 0.22 + 0.04 * rng.random() + 0.03 * np.sin(3 * angle + rng.random() * 6)
    distance = np.sqrt((xx * (1 + 0.2 * rng.random())) ** 2 + yy**2)
    blob = np.clip((radius - distance) / 0.04, 0, 1)[..., None]
    lesion_colour = np.array([95, 55, 40], float) + rng.normal(0, 8, 3)
    spots = rng.normal(0, 22, (size, size, 1))
    image = image * (1 - blob) + (lesion_colour + spots) * blob
    vignette = np.clip(1.25 - 1.6 * np.sqrt(xx**2 + yy**2), 0.3, 1)[..., None]
    image = np.clip(image * vignette, 0, 255).astype(np.uint8)
    return np.asarray(Image.fromarray(image).filter(ImageFilter.GaussianBlur(0.7)))


def png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG")
    return buffer.getvalue()


def synthetic_predictions(n: int = 240, prevalence: float = 0.2, seed: int = 0):
    """Validation predictions of a decent model: labels and probabilities whose AUC is
    about 0.85, with ids."""
    from medal_core.bundles import bundle

    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < prevalence).astype(np.int64)
    labels[:2] = (0, 1)
    logits = rng.normal(np.where(labels == 1, 1.0, -1.0), 1.0)
    probabilities = 1 / (1 + np.exp(-logits))
    return bundle.Predictions(np.array([f"val_{i}" for i in range(n)]), labels, logits, probabilities)


def make_bundle(folder: Path, seed: int = 0, with_screen: bool = True) -> Path:
    """A complete bundle with a tiny untrained custom CNN, synthetic validation
    predictions and a two-phase history.csv, calibrated (with `with_screen`) with the tiny
    screen beside it (`make_screen`, made on first use)."""
    import keras

    from medal_core.bundles import bundle
    from medal_core.evaluation import figures
    from medal_core.modeling import architectures as models

    keras.utils.set_random_seed(seed)
    model = models.build_custom_cnn(input_size=BUNDLE_INPUT, filters=BUNDLE_FILTERS)
    predictions = synthetic_predictions(seed=seed)
    threshold = figures.operating_points(predictions.labels, predictions.probabilities)
    report = figures.evaluate_probabilities(
        predictions.labels, predictions.probabilities, threshold["value"], n_bootstrap=200
    )
    manifest = {
        "name": folder.name,
        "architecture": "custom_cnn",
        "input_size": BUNDLE_INPUT,
        "class_names": ["benign", "malignant"],
        "backbone_weights": {"source": "none", "note": "trained from random initialisation"},
        "gradcam_layer": GRADCAM_LAYER,
        "test_time_views": 8,
        "temperature": 1.0,
        "threshold": threshold,
        "parameters": int(model.count_params()),
        "data": {
            "source": "synthetic",
            "train": {"images": 800, "benign": 640, "malignant": 160, "prevalence": 0.2},
            "validation": {
                "images": 240,
                "benign": int((predictions.labels == 0).sum()),
                "malignant": int(predictions.labels.sum()),
                "prevalence": float(predictions.labels.mean()),
            },
        },
        "validation_metrics": report,
        "versions": {"python": "3.11"},
        "created": "2025-01-01",
    }
    history = folder.parent / f"{folder.name}_history.csv"
    history.write_text(
        "epoch,auc,loss,val_auc,val_loss\n0,0.60,0.70,0.62,0.69\n1,0.70,0.62,0.70,0.64\n"
        "0,0.78,0.55,0.76,0.58\n1,0.83,0.50,0.80,0.55\n"
    )
    bundle.save_bundle(folder, model, manifest, predictions, history)
    history.unlink()
    if with_screen:
        screen = folder.parent / "screening"
        if not screen.is_dir():
            make_screen(screen)
        record_screen(folder, screen)
    return folder


def copy_bundle(source: Path, target: Path) -> Path:
    """Copy a bundle folder, and the screen beside it when the target has none yet: a
    bundle only loads with the screen it was calibrated with."""
    import shutil

    shutil.copytree(source, target)
    screen = source.parent / "screening"
    if screen.is_dir() and not (target.parent / "screening").exists():
        shutil.copytree(screen, target.parent / "screening")
    return target


def record_screen(folder: Path, screen: Path) -> None:
    """Record `screen` in the bundle's manifest as the one it was calibrated with."""
    import json

    from medal_core.bundles import bundle
    from medal_core.bundles.screening import SCREEN_MANIFEST

    manifest = bundle.read_manifest(folder)
    manifest["screening"] = {"folder": screen.name, "sha256": bundle.sha256_file(screen / SCREEN_MANIFEST)}
    (folder / bundle.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")


def make_screen(folder: Path, widen: float = 3.0) -> Path:
    """A tiny screen (an untrained two-layer feature extractor at SCREEN_INPUT px) fitted on
    synthetic lesions, with "clinical photos" played by smoothed noise. Its lesion limits
    are widened `widen`-fold: the tests' synthetic lesions all count as lesions."""
    import keras
    from keras import layers

    from medal_core.bundles.screening import save_screen
    from medal_core.data.datasets import resize_for_model
    from medal_core.modeling.runner import FeatureRunner
    from medal_core.screening.modality import fit_modality_check
    from medal_core.screening.ood import image_statistics
    from medal_core.screening.screen import ImageScreen, LesionCheck

    keras.utils.set_random_seed(7)
    inputs = keras.Input((SCREEN_INPUT, SCREEN_INPUT, 3), name="image")
    x = layers.Rescaling(1 / 255.0)(inputs)
    x = layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = layers.Conv2D(12, 3, strides=2, activation="relu")(x)
    model = keras.Model(inputs, layers.GlobalAveragePooling2D(name="screening_features")(x))
    runner = FeatureRunner(model)
    # Drawn at the sizes the tests upload (texture depends on it), resized as the
    # Predictor does, from seeds the tests do not use.
    lesions = np.stack(
        [resize_for_model(synthetic_lesion(100 + i, OOD_DRAW_SIZES[i % 4]), SCREEN_INPUT) for i in range(60)]
    )
    rng = np.random.default_rng(5)
    clinical = np.stack(
        [
            np.asarray(
                Image.fromarray(
                    rng.integers(60, 200, (SCREEN_INPUT, SCREEN_INPUT, 3), dtype=np.uint8)
                ).filter(ImageFilter.GaussianBlur(2))
            )
            for _ in range(30)
        ]
    )

    def described(images):
        return runner(images), image_statistics(images)

    (fit_f, fit_s), (cal_f, cal_s) = described(lesions[:40]), described(lesions[40:])
    sources = np.full(40, "synthetic"), np.full(20, "synthetic")
    lesion = LesionCheck.fit((fit_f, fit_s, sources[0]), (cal_f, cal_s, sources[1]))
    lesion = dataclasses.replace(
        lesion,
        detectors=tuple(
            dataclasses.replace(
                d, feature_limit=d.feature_limit * widen, statistics_limit=d.statistics_limit * widen
            )
            for d in lesion.detectors
        ),
    )
    modality = fit_modality_check((fit_f, fit_s), described(clinical), (cal_f, cal_s, sources[1]), c=1.0)
    # The limit midway between the most clinical-looking lesion and the least clinical
    # "photo", so that no synthetic lesion of the tests sits near it.
    highest_lesion = modality.score_statistics(*described(lesions)).max()
    lowest_clinical = modality.score_statistics(*described(clinical)).min()
    assert highest_lesion < lowest_clinical, "the test screen cannot tell its two kinds apart"
    modality = dataclasses.replace(modality, limit=float(highest_lesion + lowest_clinical) / 2)
    manifest = {
        "name": "screening",
        "input_size": SCREEN_INPUT,
        "note": f"a tiny test screen: untrained features, synthetic lesions, limits widened {widen}-fold",
        "data": {"roles": {}},
    }
    return save_screen(folder, model, ImageScreen(lesion, modality), manifest)


def make_models_dir(root: Path, names=("alpha", "beta"), broken: str | None = None) -> Path:
    """`root` holding good bundles `names` and optionally a broken copy called `broken`
    (its model file altered after the manifest was written)."""
    root.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        make_bundle(root / name, seed=i)
    if broken:
        import shutil

        shutil.copytree(root / names[0], root / broken)
        with open(root / broken / "model.keras", "ab") as handle:
            handle.write(b"tampered")
    return root
