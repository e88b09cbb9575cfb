"""Refit the out-of-distribution check of an existing bundle.

    python -m medal_core fit-ood --bundle models/mobilenet --data-root ../shared/data

fits both distributions on the bundle's training images and their limits on its
calibration images (`medal_core.screening.ood`), reports how many non-lesion pictures
it rejects, and stores the check in the bundle (`ood.npz`, with its sha256).
"""

from __future__ import annotations

import argparse
import json

from medal_core.bundles import bundle as bundles
from medal_core.data import datasets as data
from medal_core.data import roles
from medal_core.modeling.runner import ModelRunner
from medal_core.screening.ood import fit_bundle_ood, rejection_report
from medal_core.stages.non_lesion_pictures import non_lesion_pictures


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description="Fit a bundle's out-of-distribution check.")
    parser.add_argument("--bundle", required=True)
    parser.add_argument(
        "--data-root", required=True, help="the folder holding the datasets the bundle was trained on"
    )
    args = parser.parse_args(argv)

    loaded = bundles.load_bundle(args.bundle, load_ood=False)  # the one being replaced
    assignment = roles.bundle_roles(loaded.manifest, args.data_root)
    train_set, val_set = assignment.role("train"), assignment.role("calibration")
    runner = ModelRunner(loaded.model)
    size = runner.input_size
    detector, entry = fit_bundle_ood(
        runner, data.load_images(train_set.paths, size), data.load_images(val_set.paths, size)
    )
    # Drawn at 256 px whatever the model's size: the screenshots need room.
    entry["non_lesion_check"] = rejection_report(runner, detector, non_lesion_pictures(256))
    bundles.attach_ood(loaded.folder, detector, entry)
    print(json.dumps(entry, indent=2))


if __name__ == "__main__":
    main()
