"""Pictures that are not skin lesions, for measuring the out-of-distribution check.

The calibration stage and `fit-screening` report how many of them get no melanoma estimate;
the tests use them too. They are drawn here (flat colours, noise, text, screenshots) or
come from scikit-image's sample photographs (a development dependency: without it, only
the drawn ones are used).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from medal_core.data.datasets import resize_for_model


def synthetic_non_lesion_images(size: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """Flat colours, noise, text and screenshot-like images, uint8 RGB (size, size, 3)."""
    rng = np.random.default_rng(seed)
    images = {}
    for name, colour in {
        "white": (255, 255, 255),
        "black": (0, 0, 0),
        "grey": (128, 128, 128),
        "red": (220, 30, 30),
        "green": (40, 180, 60),
        "blue": (30, 60, 200),
        "skin": (224, 172, 140),
    }.items():
        images[f"flat_{name}"] = np.full((size, size, 3), colour, dtype=np.uint8)
    images["noise_uniform"] = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
    images["noise_gaussian"] = np.clip(rng.normal(128, 40, (size, size, 3)), 0, 255).astype(np.uint8)
    images["noise_coarse"] = np.asarray(
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).resize(
            (size, size), Image.Resampling.NEAREST
        )
    )
    for i in range(3):
        page = Image.new("RGB", (size, size), "white")
        draw = ImageDraw.Draw(page)
        for line in range(0, size, 14):
            words = " ".join(
                "".join(chr(rng.integers(97, 123)) for _ in range(rng.integers(2, 9))) for _ in range(6)
            )
            draw.text((4, line), words, fill=(0, 0, 0))
        images[f"text_{i}"] = np.asarray(page)
    for i in range(3):
        images[f"screenshot_{i}"] = _screenshot(size, rng)
    return images


def _screenshot(size: int, rng: np.random.Generator) -> np.ndarray:
    """A desktop-like picture: title bar, panels, buttons and lines of text."""
    shot = Image.new("RGB", (size, size), tuple(int(c) for c in rng.integers(200, 256, 3)))
    draw = ImageDraw.Draw(shot)
    draw.rectangle([0, 0, size, 20], fill=tuple(int(c) for c in rng.integers(0, 120, 3)))
    for _ in range(6):
        x, y = rng.integers(0, size - 60, 2)
        draw.rectangle(
            [x, y, x + rng.integers(30, 120), y + rng.integers(12, 60)],
            fill=tuple(int(c) for c in rng.integers(0, 256, 3)),
            outline=(0, 0, 0),
        )
    for y in range(30, size, 18):
        draw.text((8, y), "File  Edit  View  Settings  " * 2, fill=(20, 20, 20))
    return np.asarray(shot)


def sample_photographs(size: int = 256) -> dict[str, np.ndarray]:
    """scikit-image's sample photographs (a dev dependency), as uint8 RGB (size, size, 3)."""
    from skimage import data as samples  # only the benchmark and tests need it

    names = [
        "astronaut",
        "coffee",
        "chelsea",
        "rocket",
        "camera",
        "coins",
        "moon",
        "page",
        "text",
        "brick",
        "grass",
        "gravel",
        "checkerboard",
        "hubble_deep_field",
        "horse",
        "clock",
        "logo",
        "colorwheel",
        "cat",
        "immunohistochemistry",
    ]
    photos = {}
    for name in names:
        loader = getattr(samples, name, None)
        if loader is None:
            continue
        image = np.asarray(loader())
        if image.dtype == bool:
            image = image.astype(np.uint8) * 255
        if image.ndim == 2:
            image = np.stack([image] * 3, axis=-1)
        photos[name] = np.asarray(Image.fromarray(image[..., :3].astype(np.uint8)).resize((size, size)))
    return photos


def non_lesion_pictures(size: int = 256) -> dict[str, np.ndarray]:
    """The drawn pictures, plus scikit-image's photographs when it is installed."""
    pictures = synthetic_non_lesion_images(size)
    try:
        pictures.update(sample_photographs(size))
    except ImportError:
        pass
    return pictures


def non_lesion_check(scores_of, input_size: int) -> dict:
    """How many non-lesion pictures get no estimate from a screen: `scores_of` maps uint8
    images (n, input_size, input_size, 3) to their `ScreenScores`."""
    pictures = non_lesion_pictures(256)  # drawn at 256 px whatever the size: text needs room
    batch = np.stack([resize_for_model(p, input_size) for p in pictures.values()])
    refused = scores_of(batch).no_estimate
    return {
        "images": len(batch),
        "no_estimate": int(refused.sum()),
        "share_no_estimate": float(refused.mean()),
        "given_an_estimate": [name for name, r in zip(pictures, refused) if not r],
    }
