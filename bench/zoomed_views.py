"""Selection-set ROC AUC of a bundle with zoomed test-time views added to its 8 dihedral
ones: would the app gain from also scoring the middle of the image? Prints figures only;
it asserts nothing and writes nothing.

    python bench/zoomed_views.py --bundle models/mobilenetv2_cc_ensemble \
        --data-root ../shared/data --zoom 250 --zoom 280

A zoom of S decodes each image at S x S and keeps its central input-size square (224 of
250 keeps the middle 80% of the area), which training's random resized crops (area 0.6-1.0)
have shown the model. Each zoom is scored with the 8 dihedral views, like the whole
image, and the logits of the whole image and a zoom are averaged, so "whole + zoom S"
costs twice the app's pass. Only the selection set is read: the calibration and report
sets are not touched.
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medal_core.bundles import bundle as bundles  # noqa: E402
from medal_core.data import datasets, roles  # noqa: E402
from medal_core.evaluation import metrics  # noqa: E402
from medal_core.modeling.runner import ModelRunner  # noqa: E402
from medal_core.stages.evaluate import mean_logits  # noqa: E402


def central_square(images: np.ndarray, size: int) -> np.ndarray:
    """The central (size, size) square of images (n, s, s, 3), s >= size."""
    offset = (images.shape[1] - size) // 2
    return images[:, offset : offset + size, offset : offset + size]


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", required=True, help="a bundle folder")
    parser.add_argument("--data-root", required=True, help="the folder holding the datasets")
    parser.add_argument(
        "--zoom", type=int, action="append", required=True, help="decode size S > input size (repeatable)"
    )
    args = parser.parse_args(argv)

    loaded = bundles.load_bundle(args.bundle, load_screen_too=False)
    runner = ModelRunner(loaded.model)
    size, views = runner.input_size, loaded.manifest["test_time_views"]
    if any(zoom <= size for zoom in args.zoom):
        parser.error(f"every --zoom must be larger than the input size {size}")
    selection = roles.bundle_roles(loaded.manifest, args.data_root).role("selection")
    decoded = datasets.load_images_at(selection.paths, (size, *args.zoom))
    logits = {"whole image": mean_logits(runner, decoded[0], views)}
    for zoom, images in zip(args.zoom, decoded[1:]):
        logits[f"zoom {zoom}"] = mean_logits(runner, central_square(images, size), views)

    melanomas = int(selection.labels.sum())
    print(f"selection set: {len(selection.labels)} images, {melanomas} melanomas, {views} views each")
    for name, values in logits.items():
        print(f"  {name:<40} ROC AUC {metrics.roc_auc(selection.labels, values):.4f}")
    zooms = [name for name in logits if name != "whole image"]
    for count in range(1, len(zooms) + 1):  # the whole image with every subset of the zooms
        for names in itertools.combinations(zooms, count):
            names = ("whole image", *names)
            mean = np.mean([logits[name] for name in names], axis=0)
            label = " + ".join(names)
            print(f"  {label:<40} ROC AUC {metrics.roc_auc(selection.labels, mean):.4f}")


if __name__ == "__main__":
    main()
