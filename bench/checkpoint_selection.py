"""Selection-set ROC AUC of a training checkpoint that was never made a bundle, beside a
committed bundle, the mean of the two logits (the flat ensemble's rule) and, for two
transfer models of one architecture, the model whose weights are the mean of theirs (a
"model soup"). Prints figures only; it asserts nothing and writes nothing.

    python bench/checkpoint_selection.py --arch densenet121 \
        --weights runs/densenet121/checkpoints/finetune/best.weights.h5 \
        --against models/mobilenetv2 --data-root ../shared/data

For a run stopped before its calibration stage (the calibration and report sets are not
touched here). The selection images are rebuilt from `--against`'s manifest; the run's
`checkpoints/fingerprint.json` (next to the phase folder of `--weights`) must name the
same architecture as given and the same train and selection images as that manifest, or
nothing is scored. Each model is scored at its own input size (a second stage may have
gone on at another: `train --init-from --input-size`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import cast

import keras

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medal_core.bundles import bundle as bundles  # noqa: E402
from medal_core.data import datasets as data  # noqa: E402
from medal_core.data import roles  # noqa: E402
from medal_core.evaluation import metrics  # noqa: E402
from medal_core.modeling import architectures as models  # noqa: E402
from medal_core.modeling.ensembling import mean_weights  # noqa: E402
from medal_core.modeling.runner import ModelRunner  # noqa: E402
from medal_core.stages.evaluate import mean_logits  # noqa: E402


def run_fingerprint(weights: Path) -> dict | None:
    """The fingerprint of the run that wrote the checkpoint `weights`, or None."""
    fingerprint_file = weights.resolve().parents[1] / "fingerprint.json"
    return json.loads(fingerprint_file.read_text()) if fingerprint_file.is_file() else None


def provenance_problem(fingerprint: dict | None, arch: str, manifest: dict) -> str | None:
    """Why a checkpoint whose run has `fingerprint` cannot be scored beside the bundle of
    `manifest`, or None: the fingerprint must exist and name the architecture `arch` and
    the bundle's train and selection images. (Its input size may differ from the
    bundle's: each model is scored at its own.)"""
    if fingerprint is None:
        return "no fingerprint.json beside the checkpoint: --weights must be a checkpoint written by `train`"
    if fingerprint["config"]["arch"] != arch:
        return f"the checkpoint is a {fingerprint['config']['arch']}, not a {arch}"
    for role in ("train", "selection"):
        if fingerprint[f"{role}_ids_sha256"] != manifest["data"]["roles"][role]["ids_sha256"]:
            return f"the checkpoint's run had other {role} images than the bundle's"
    return None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", required=True, choices=sorted(models.ARCHITECTURES))
    parser.add_argument("--weights", required=True, help="a checkpoint's best.weights.h5")
    parser.add_argument("--against", required=True, help="a bundle trained on the same roles")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--views", type=int, default=8, help="test-time views (the app's: 8)")
    args = parser.parse_args(argv)

    reference = bundles.load_bundle(args.against, load_screen_too=False)
    fingerprint = run_fingerprint(Path(args.weights))
    problem = provenance_problem(fingerprint, args.arch, reference.manifest)
    if problem:
        parser.error(problem)
    assert fingerprint is not None
    selection = roles.bundle_roles(reference.manifest, args.data_root).role("selection")
    size, bundle_size = int(fingerprint["config"]["input_size"]), int(reference.manifest["input_size"])
    checkpoint = models.build_model(args.arch, size, weights=None)
    checkpoint.load_weights(args.weights)

    images = {px: data.load_images(selection.paths, px) for px in {size, bundle_size}}
    checkpoint_name = f"{args.arch} at {size} px (checkpoint)"
    bundle_name = f"{reference.name} at {bundle_size} px (bundle)"
    logits = {
        checkpoint_name: mean_logits(ModelRunner(checkpoint), images[size], args.views),
        bundle_name: mean_logits(ModelRunner(reference.model), images[bundle_size], args.views),
    }
    logits["mean of both logits"] = (logits[checkpoint_name] + logits[bundle_name]) / 2
    # Weights can be averaged between two models of one architecture whose batch norms
    # stayed frozen (transfer models; see `ensembling.mean_weights`).
    if reference.manifest["architecture"] == args.arch and models.ARCHITECTURES[args.arch].is_transfer:
        soup = models.build_model(args.arch, size, weights=None)
        reference_weights = cast(keras.Model, reference.model).get_weights()
        soup.set_weights(mean_weights([checkpoint.get_weights(), reference_weights]))
        logits[f"mean of both weights, {size} px"] = mean_logits(ModelRunner(soup), images[size], args.views)
    melanomas = int(selection.labels.sum())
    print(f"selection set: {len(selection.labels)} images, {melanomas} melanomas, {args.views} views")
    for name, values in logits.items():
        print(f"  {name:<36} ROC AUC {metrics.roc_auc(selection.labels, values):.4f}")


if __name__ == "__main__":
    main()
