"""Helpers the tests import: synthetic image files and a tiny bundle's parts.

(Fixtures live in conftest.py, which no test imports.)
"""

import sys
from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path, size=(32, 32), value=None, seed=0) -> Path:
    """Write a small synthetic RGB image (format from the suffix) and return its path.

    `size` is (width, height). With `value` the image is a flat grey of that brightness;
    otherwise it is seeded noise.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    width, height = size
    if value is None:
        pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    else:
        pixels = np.full((height, width, 3), value, dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def write_class_folders(root, per_class=4, splits=("",), size=(32, 32), suffix=".jpg") -> Path:
    """`root/[split/]{benign,malignant}/*`: benign images dark, malignant ones bright,
    with a little seeded noise so that no two files are identical."""
    root = Path(root)
    rng = np.random.default_rng(0)
    for split in splits:
        for class_name, base in (("benign", 40), ("malignant", 210)):
            for i in range(per_class):
                value = int(base + rng.integers(-20, 21))
                name = f"{split or 'all'}_{class_name}_{i}{suffix}"
                write_image(root / split / class_name / name, size, value=value)
    return root


# ---------------------------------------------------------------- a tiny bundle

TINY_INPUT = 32
TINY_FILTERS = (8, 16)
TINY_GRADCAM_LAYER = "block2_gelu"


def tiny_model():
    """A two-block custom CNN at 32×32: builds in well under a second."""
    from medal_core.modeling import architectures as models

    return models.build_custom_cnn(input_size=TINY_INPUT, filters=TINY_FILTERS)


def tiny_manifest(name="tiny") -> dict:
    """A manifest with every field `bundle.REQUIRED_FIELDS` asks for, except the two
    `save_bundle` adds itself (format_version and model_sha256)."""
    return {
        "name": name,
        "architecture": "custom_cnn",
        "input_size": TINY_INPUT,
        "class_names": ["benign", "malignant"],
        "backbone_weights": {"source": "none"},
        "gradcam_layer": TINY_GRADCAM_LAYER,
        "test_time_views": 1,
        "temperature": 1.5,
        "threshold": {"value": 0.4, "target_sensitivity": 0.95},
        "data": {"source": "synthetic"},
        "validation_metrics": {"roc_auc": {"value": 0.75}},
        "versions": {"python": sys.version.split()[0]},
    }


def tiny_predictions():
    from medal_core.bundles import bundle

    logits = np.array([-2.0, -0.5, 0.25, 1.0, 3.0, -1.25])
    labels = np.array([0, 0, 1, 1, 1, 0])
    ids = np.array([f"img_{i}" for i in range(len(labels))])
    return bundle.Predictions(ids, labels, logits, 1 / (1 + np.exp(-logits / 1.5)))
