""""Is this a dermoscopic image?" — the check that keeps plain phone photos of a mole
from getting a melanoma estimate the models were never validated for.

A dermoscope magnifies the lesion under polarised or immersion light: the skin texture,
the framing (the lesion fills the frame, often inside a dark circular field) and the
colours differ from a clinical photo taken with a phone. The lesion-vs-non-lesion check
(`medal_core.ood`) cannot see that difference, since a phone photo of a mole *is* a
lesion image. This check is a logistic regression on the model's own pooled features
and the image statistics of `ood.image_statistics`, trained on dermoscopic images
against PAD-UFES-20's smartphone photos (split by patient), with its limit set to keep
`KEEP_DERMOSCOPIC` of the bundle's calibration images.

    python -m medal_core.modality --bundle models/mobilenet --data-root ../shared/data

fits it for a bundle, reports what it reaches on patients and images it never saw, and
stores it in the bundle (`modality.npz`, recorded with its sha256 in the manifest).
"""

from __future__ import annotations

import argparse
import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medal_core.ood import image_statistics

MODALITY_FILE = "modality.npz"
KEEP_DERMOSCOPIC = 0.99            # of the calibration images, kept for an estimate
CLINICAL_SET = "pad_ufes20_clinical"


@dataclass(frozen=True)
class ModalityCheck:
    """Logistic regression on standardised [pooled features, image statistics]:
    `score` is P(clinical photo); above `limit` the image gets no melanoma estimate."""

    mean: np.ndarray        # (d,)
    scale: np.ndarray       # (d,)
    coef: np.ndarray        # (d,)
    intercept: float
    limit: float

    def score(self, features: np.ndarray, images: np.ndarray) -> np.ndarray:
        """(n,) P(clinical) from pooled features (n, f) and model-size uint8 images."""
        x = (_inputs(features, images) - self.mean) / self.scale
        return 1 / (1 + np.exp(-(x @ self.coef + self.intercept)))

    def looks_dermoscopic(self, features: np.ndarray, images: np.ndarray) -> np.ndarray:
        """(n,) bool: True where the image may get an estimate."""
        return self.score(features, images) <= self.limit

    def save(self, path: Path) -> None:
        np.savez_compressed(path, mean=self.mean, scale=self.scale, coef=self.coef,
                            intercept_limit=np.array([self.intercept, self.limit]))

    @classmethod
    def load(cls, path: Path) -> "ModalityCheck":
        with np.load(path) as stored:
            intercept, limit = map(float, stored["intercept_limit"])
            return cls(stored["mean"], stored["scale"], stored["coef"], intercept, limit)


def _inputs(features: np.ndarray, images: np.ndarray) -> np.ndarray:
    return np.hstack([np.asarray(features, np.float64), image_statistics(images).astype(np.float64)])


def fit_modality_check(dermoscopic: tuple[np.ndarray, np.ndarray],
                       clinical: tuple[np.ndarray, np.ndarray],
                       keep_features: np.ndarray, keep_images: np.ndarray,
                       keep_share: float = KEEP_DERMOSCOPIC, c: float = 0.003) -> ModalityCheck:
    """Fit on (features, images) of dermoscopic and clinical training images; the limit
    keeps `keep_share` of the dermoscopic (keep_features, keep_images) set."""
    from sklearn.linear_model import LogisticRegression

    x = np.vstack([_inputs(*dermoscopic), _inputs(*clinical)])
    y = np.r_[np.zeros(len(dermoscopic[0])), np.ones(len(clinical[0]))]
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
    model.fit((x - mean) / scale, y)
    check = ModalityCheck(mean, scale, model.coef_[0], float(model.intercept_[0]), 1.0)
    kept_scores = check.score(keep_features, keep_images)
    limit = float(np.quantile(kept_scores, keep_share, method="inverted_cdf"))
    return ModalityCheck(mean, scale, model.coef_[0], float(model.intercept_[0]), limit)


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
            row["image_id"])
    return fit, held


def fit_for_bundle(folder: str | Path, assignment, data_root: str | Path,
                   max_train: int = 3000) -> dict:
    """Fit the check for the bundle in `folder` on its training images (a seeded sample
    of `max_train`) and half of the clinical set's patients, set its limit on the
    calibration images, measure it on the report images and the other patients, and
    store it in the bundle. Returns the manifest's `modality` entry."""
    from medal_core import bundle as bundles
    from medal_core import data
    from medal_core.inference import ModelRunner

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
    check = fit_modality_check(features_of(train_set), features_of(clinical_fit),
                               cal_features, cal_images)
    report_kept = check.looks_dermoscopic(*features_of(report))
    clinical_rejected = ~check.looks_dermoscopic(*features_of(clinical_held))
    per_source = {source: float(np.mean(report_kept[report.sources == source]))
                  for source in sorted(set(report.sources))}
    check.save(loaded.folder / MODALITY_FILE)
    entry = {
        "file": MODALITY_FILE,
        "method": ("logistic regression on the pooled features and image statistics, "
                   "dermoscopic training images vs PAD-UFES-20 smartphone photos (half of "
                   f"its patients); limit keeps {KEEP_DERMOSCOPIC:.0%} of the calibration "
                   "images"),
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
    parser.add_argument("--data-root", required=True,
                        help="folder with the bundle's datasets and pad_ufes20_clinical")
    parser.add_argument("--max-train", type=int, default=3000,
                        help="dermoscopic training images to fit on (a seeded sample)")
    args = parser.parse_args(argv)

    from medal_core import bundle as bundles
    from medal_core import roles

    assignment = roles.bundle_roles(bundles.read_manifest(args.bundle), args.data_root)
    entry = fit_for_bundle(args.bundle, assignment, args.data_root, args.max_train)
    print(json.dumps(entry, indent=2))
    print("now re-run `python -m medal_core.calibrate` on the bundle: the threshold counts "
          "the images this check refuses")
    return entry


if __name__ == "__main__":
    main()
