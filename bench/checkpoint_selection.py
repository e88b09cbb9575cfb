"""Selection-set ROC AUC of a training checkpoint that was never made a bundle, beside a
committed bundle and the mean of the two logits (the flat ensemble's rule). Prints
figures only; it asserts nothing and writes nothing.

    python bench/checkpoint_selection.py --arch densenet121 \
        --weights runs/densenet121/checkpoints/finetune/best.weights.h5 \
        --against models/mobilenetv2 --data-root ../shared/data

For a run stopped before its calibration stage (the calibration and report sets are not
touched here). The selection images are rebuilt from `--against`'s manifest, so the
checkpoint must come from a run of the same recipe and seed (`train` records both).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medal_core.bundles import bundle as bundles  # noqa: E402
from medal_core.data import datasets as data  # noqa: E402
from medal_core.data import roles  # noqa: E402
from medal_core.evaluation import metrics  # noqa: E402
from medal_core.modeling import architectures as models  # noqa: E402
from medal_core.modeling.runner import ModelRunner  # noqa: E402
from medal_core.stages.evaluate import mean_logits  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", required=True, choices=sorted(models.ARCHITECTURES))
    parser.add_argument("--weights", required=True, help="a checkpoint's best.weights.h5")
    parser.add_argument("--against", required=True, help="a bundle trained on the same roles")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--views", type=int, default=8, help="test-time views (the app's: 8)")
    args = parser.parse_args(argv)

    reference = bundles.load_bundle(args.against, load_screen_too=False)
    size = reference.manifest["input_size"]
    selection = roles.bundle_roles(reference.manifest, args.data_root).role("selection")
    checkpoint = models.build_model(args.arch, size, weights=None)
    checkpoint.load_weights(args.weights)

    images = data.load_images(selection.paths, size)
    logits = {
        args.arch: mean_logits(ModelRunner(checkpoint), images, args.views),
        reference.name: mean_logits(ModelRunner(reference.model), images, args.views),
    }
    logits["mean of both logits"] = (logits[args.arch] + logits[reference.name]) / 2
    melanomas = int(selection.labels.sum())
    print(f"selection set: {len(selection.labels)} images, {melanomas} melanomas, {args.views} views")
    for name, values in logits.items():
        print(f"  {name:<22} ROC AUC {metrics.roc_auc(selection.labels, values):.4f}")


if __name__ == "__main__":
    main()
