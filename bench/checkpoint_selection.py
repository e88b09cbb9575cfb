"""Selection-set ROC AUC of a training checkpoint that was never made a bundle, beside a
committed bundle, the mean of the two logits (the flat ensemble's rule) and, for two
models of one architecture, the model whose weights are the mean of theirs (a "model
soup"). Prints figures only; it asserts nothing and writes nothing.

    python bench/checkpoint_selection.py --arch densenet121 \
        --weights runs/densenet121/checkpoints/finetune/best.weights.h5 \
        --against models/mobilenetv2 --data-root ../shared/data

For a run stopped before its calibration stage (the calibration and report sets are not
touched here). The selection images are rebuilt from `--against`'s manifest; the run's
`checkpoints/fingerprint.json` (next to the phase folder of `--weights`) must name the
same architecture and input size as given, and the same train and selection images as
that manifest, or nothing is scored.
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
from medal_core.modeling.runner import ModelRunner  # noqa: E402
from medal_core.stages.evaluate import mean_logits  # noqa: E402


def provenance_problem(weights: Path, arch: str, input_size: int, manifest: dict) -> str | None:
    """Why the checkpoint `weights` cannot be scored beside the bundle of `manifest`, or
    None: its run's fingerprint must exist and match the architecture, the input size,
    and the bundle's train and selection images."""
    fingerprint_file = weights.resolve().parents[1] / "fingerprint.json"
    if not fingerprint_file.is_file():
        return f"no {fingerprint_file}: --weights must be a checkpoint written by `train`"
    fingerprint = json.loads(fingerprint_file.read_text())
    config = fingerprint["config"]
    if (config["arch"], config["input_size"]) != (arch, input_size):
        found = f"{config['arch']} at {config['input_size']} px"
        return f"the checkpoint is {found}, not {arch} at {input_size} px"
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
    size = reference.manifest["input_size"]
    problem = provenance_problem(Path(args.weights), args.arch, size, reference.manifest)
    if problem:
        parser.error(problem)
    selection = roles.bundle_roles(reference.manifest, args.data_root).role("selection")
    checkpoint = models.build_model(args.arch, size, weights=None)
    checkpoint.load_weights(args.weights)

    images = data.load_images(selection.paths, size)
    checkpoint_name, bundle_name = f"{args.arch} (checkpoint)", f"{reference.name} (bundle)"
    logits = {
        checkpoint_name: mean_logits(ModelRunner(checkpoint), images, args.views),
        bundle_name: mean_logits(ModelRunner(reference.model), images, args.views),
    }
    logits["mean of both logits"] = (logits[checkpoint_name] + logits[bundle_name]) / 2
    if reference.manifest["architecture"] == args.arch:
        soup = models.build_model(args.arch, size, weights=None)
        pairs = zip(checkpoint.get_weights(), cast(keras.Model, reference.model).get_weights())
        soup.set_weights([(mine + theirs) / 2 for mine, theirs in pairs])
        logits["mean of both weights"] = mean_logits(ModelRunner(soup), images, args.views)
    melanomas = int(selection.labels.sum())
    print(f"selection set: {len(selection.labels)} images, {melanomas} melanomas, {args.views} views")
    for name, values in logits.items():
        print(f"  {name:<28} ROC AUC {metrics.roc_auc(selection.labels, values):.4f}")


if __name__ == "__main__":
    main()
