"""Fit the dermoscopic-vs-clinical check of a bundle (`medal_core.screening.modality`).

    python -m medal_core fit-modality --bundle models/mobilenet --data-root ../shared/data

fits it on the bundle's training images and half of PAD-UFES-20's patients, sets its
limit on the calibration images, measures it on the report images and the other
patients, and stores it in the bundle (`modality.npz`, with its sha256).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

from medal_core.bundles import bundle as bundles
from medal_core.data import datasets as data
from medal_core.data import roles
from medal_core.modeling.runner import ModelRunner
from medal_core.screening.modality import (
    CLINICAL_SET,
    KEEP_DERMOSCOPIC,
    MODALITY_FILE,
    fit_modality_check,
)


def patient_split(labels_csv: Path, seed: int = 0) -> tuple[set[str], set[str]]:
    """(fit ids, held-out ids) of a clinical set, half of its patients each."""
    with labels_csv.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    patients = sorted({row.get("patient_id") or row["image_id"] for row in rows})
    rng = np.random.default_rng(seed)
    held_out_patients = set(rng.permutation(patients)[: len(patients) // 2].tolist())
    fit: set[str] = set()
    held: set[str] = set()
    for row in rows:
        (held if (row.get("patient_id") or row["image_id"]) in held_out_patients else fit).add(
            row["image_id"]
        )
    return fit, held


def fit_for_bundle(folder: str | Path, assignment, data_root: str | Path, max_train: int = 3000) -> dict:
    """Fit the check for the bundle in `folder` on its training images (a seeded sample
    of `max_train`) and half of the clinical set's patients, set its limit on the
    calibration images, measure it on the report images and the other patients, and
    store it in the bundle. Returns the manifest's `modality` entry."""
    loaded = bundles.load_bundle(folder, load_ood=False)
    runner = ModelRunner(loaded.model)
    size = runner.input_size

    def features_of(dataset):
        images = data.load_images(dataset.paths, size)
        return runner.batched(images)[1], images

    rng = np.random.default_rng(0)
    train_set = assignment.role("train")
    train_set = train_set.subset(np.sort(rng.permutation(len(train_set))[:max_train]))
    clinical_root = Path(data_root) / CLINICAL_SET
    clinical = data.load_dataset(clinical_root)
    fit_ids, held_ids = patient_split(clinical_root / "labels.csv")
    clinical_fit = clinical.subset(np.isin(clinical.image_ids, sorted(fit_ids)))
    clinical_held = clinical.subset(np.isin(clinical.image_ids, sorted(held_ids)))
    calibration, report = assignment.role("calibration"), assignment.role("report")

    cal_features, cal_images = features_of(calibration)
    check = fit_modality_check(features_of(train_set), features_of(clinical_fit), cal_features, cal_images)
    report_kept = check.looks_dermoscopic(*features_of(report))
    clinical_rejected = ~check.looks_dermoscopic(*features_of(clinical_held))
    per_source = {
        source: float(np.mean(report_kept[report.sources == source]))
        for source in sorted(set(report.sources))
    }
    check.save(loaded.folder / MODALITY_FILE)
    entry = {
        "file": MODALITY_FILE,
        "method": (
            "logistic regression on the pooled features and image statistics, "
            "dermoscopic training images vs PAD-UFES-20 smartphone photos (half of "
            f"its patients); limit keeps {KEEP_DERMOSCOPIC:.0%} of the calibration "
            "images"
        ),
        "limit": check.limit,
        "fit": {"dermoscopic": len(train_set), "clinical": len(clinical_fit)},
        "held_out": {
            "report_dermoscopic_kept": float(report_kept.mean()),
            "report_dermoscopic_kept_by_source": per_source,
            "report_images": len(report),
            "clinical_rejected": float(clinical_rejected.mean()),
            "clinical_images": len(clinical_held),
            "clinical_patients": "the other half of PAD-UFES-20's patients",
        },
        "sha256": bundles.sha256_file(loaded.folder / MODALITY_FILE),
    }
    manifest = bundles.read_manifest(loaded.folder)
    manifest["modality"] = entry
    (loaded.folder / bundles.MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return entry


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description="Fit a bundle's dermoscopic-vs-clinical check.")
    parser.add_argument("--bundle", required=True)
    parser.add_argument(
        "--data-root", required=True, help="folder with the bundle's datasets and pad_ufes20_clinical"
    )
    parser.add_argument(
        "--max-train", type=int, default=3000, help="dermoscopic training images to fit on (a seeded sample)"
    )
    args = parser.parse_args(argv)

    assignment = roles.bundle_roles(bundles.read_manifest(args.bundle), args.data_root)
    entry = fit_for_bundle(args.bundle, assignment, args.data_root, args.max_train)
    print(json.dumps(entry, indent=2))
    print(
        "now re-run `python -m medal_core calibrate` on the bundle: the threshold counts "
        "the images this check refuses"
    )
    return entry


if __name__ == "__main__":
    main()
