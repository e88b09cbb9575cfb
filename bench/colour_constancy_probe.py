"""Does shades-of-grey colour constancy help? A frozen-feature probe on the selection set,
as the issue's probe: pooled ImageNet MobileNetV2 features (mean of the image and its
mirror image), a class-balanced logistic regression fitted on training images, ROC AUC
on the selection set, with and without `ShadesOfGrey` before the backbone. Prints
figures only; it asserts nothing and writes nothing.

    python bench/colour_constancy_probe.py --bundle models/mobilenetv2 --data-root ../shared/data

The roles are rebuilt from `--bundle`'s manifest (image for image). Training images:
all of ISIC 2017's and a seeded sample of HAM10000's (`--ham`, weighted as the recipe
weights them); nothing of the calibration or report sets is read.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medal_core.data import datasets as data  # noqa: E402
from medal_core.data import roles  # noqa: E402
from medal_core.evaluation import metrics  # noqa: E402

SIZE = 224
SHARED_WEIGHTS = Path(__file__).resolve().parents[2] / "shared" / "weights"
DEFAULT_WEIGHTS = SHARED_WEIGHTS / "mobilenetv2_1.00_224_no_top_imagenet.weights.h5"
C_GRID = (0.003, 0.01, 0.03, 0.1)  # inverse regularisation strengths, all printed


def pooled_features(images: np.ndarray, weights: str, colour_constancy: bool) -> np.ndarray:
    """(n, 1280) MobileNetV2 ImageNet features of uint8 images (n, 224, 224, 3), the mean
    over each image and its mirror image."""
    import keras

    from medal_core.modeling.colour import ShadesOfGrey

    inputs = keras.Input((SIZE, SIZE, 3))
    x = ShadesOfGrey()(inputs) if colour_constancy else inputs
    x = keras.layers.Rescaling(1 / 127.5, offset=-1)(x)
    backbone = keras.applications.MobileNetV2(
        include_top=False, pooling="avg", input_tensor=x, weights=weights
    )
    model = keras.Model(inputs, backbone.output)
    parts = []
    for start in range(0, len(images), 256):
        chunk = images[start : start + 256].astype(np.float32)
        views = [model.predict(v, batch_size=64, verbose=0) for v in (chunk, chunk[:, :, ::-1])]
        parts.append(np.mean(views, axis=0))
    return np.concatenate(parts)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default="models/mobilenetv2", help="whose roles to rebuild")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="MobileNetV2 1.0 ImageNet weights")
    parser.add_argument("--ham", type=int, default=2500, help="HAM10000 training images sampled")
    args = parser.parse_args(argv)

    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    manifest = json.loads((Path(args.bundle) / "manifest.json").read_text())
    assignment = roles.bundle_roles(manifest, args.data_root)
    dataset, role = assignment.dataset, assignment.roles
    ham_weight = float(assignment.train_weights[dataset.sources == "ham10000"][0])
    isic = np.flatnonzero((role == "train") & (dataset.sources == "isic2017"))
    ham = np.flatnonzero((role == "train") & (dataset.sources == "ham10000"))
    ham = np.random.default_rng(0).choice(ham, min(args.ham, len(ham)), replace=False)
    selection = np.flatnonzero(role == "selection")
    train = np.concatenate([isic, ham])
    sample_weight = np.concatenate([np.ones(len(isic)), np.full(len(ham), ham_weight)])
    images = data.load_images(dataset.paths[np.concatenate([train, selection])], SIZE)
    labels = dataset.labels.astype(int)
    print(
        f"train: {len(isic)} ISIC 2017 + {len(ham)} HAM10000 (weight {ham_weight}); "
        f"selection: {len(selection)} ({int(labels[selection].sum())} melanomas)"
    )
    for colour_constancy in (False, True):
        features = pooled_features(images, args.weights, colour_constancy)
        scaler = StandardScaler().fit(features[: len(train)])
        fitted, scored = scaler.transform(features[: len(train)]), scaler.transform(features[len(train) :])
        aucs = []
        for c in C_GRID:
            probe = LogisticRegression(C=c, max_iter=3000, class_weight="balanced")
            probe.fit(fitted, labels[train], sample_weight=sample_weight)
            aucs.append(metrics.roc_auc(labels[selection], probe.decision_function(scored)))
        name = "shades of grey" if colour_constancy else "raw RGB"
        print(f"{name:<15} selection ROC AUC at C = {C_GRID}: " + ", ".join(f"{a:.4f}" for a in aucs))


if __name__ == "__main__":
    main()
