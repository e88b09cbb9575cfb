"""Fit the screen every bundle shares (`medal_core.screening.screen`).

    python -m medal_core fit-screening --recipe recipes/dermoscopic.json \\
        --data-root ../shared/data \\
        --weights ../shared/weights/mobilenet_0.75_224_no_top_imagenet.weights.h5 \\
        --out models/screening

Uses the recipe's roles, as the bundles do, so that no image changes role: the checks are
fitted on training images (up to `--per-source` of each dermoscopic source, seeded) and
half of PAD-UFES-20's patients; their limits are set on the calibration images; the
figures come from the report images, the other half of the patients and the non-lesion
pictures, none of which chose anything. Then re-run `python -m medal_core calibrate` on
each bundle: its threshold counts the images the screen refuses.
"""

from __future__ import annotations

import argparse
import csv
import json
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from medal_core.bundles.screening import SCREEN_FOLDER, save_screen
from medal_core.data import datasets as data
from medal_core.data import roles
from medal_core.modeling.architectures import SCREENING_BLOCKS, build_screening_features
from medal_core.modeling.runner import FeatureRunner
from medal_core.screening.modality import CLINICAL_SET, KEEP_DERMOSCOPIC, fit_modality_check
from medal_core.screening.ood import KEEP_EACH, image_statistics
from medal_core.screening.screen import ImageScreen, LesionCheck
from medal_core.stages.non_lesion_pictures import non_lesion_check

INPUT_SIZE = 224  # the ImageNet weights' own size
PER_SOURCE = 1500  # training images per dermoscopic source: each source weighs about the same


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


def per_source_sample(dataset: data.Dataset, per_source: int, seed: int = 0) -> data.Dataset:
    """Up to `per_source` images of each source of `dataset` (a seeded draw, file order kept)."""
    rng = np.random.default_rng(seed)
    sources = np.asarray(dataset.sources, dtype=str)
    chosen = [
        rng.permutation(np.flatnonzero(sources == source))[:per_source] for source in sorted(set(sources))
    ]
    return dataset.subset(np.sort(np.concatenate(chosen)))


class Described:
    """Screening features, image statistics and sources of one set of images."""

    def __init__(self, runner: FeatureRunner, dataset: data.Dataset):
        images = data.load_images(dataset.paths, runner.input_size)
        self.features = runner(images)
        self.statistics = image_statistics(images)
        self.sources = np.asarray(dataset.sources, dtype=str)

    def pick(self, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return self.features[mask], self.statistics[mask]


def kept_shares(kept: np.ndarray, sources: np.ndarray) -> dict:
    """Share of images kept, overall and per source."""
    return {
        "all": float(kept.mean()),
        **{source: float(kept[sources == source].mean()) for source in sorted(set(sources.tolist()))},
    }


def fit_screen(
    assignment: roles.RoleAssignment,
    data_root: str | Path,
    weights: str,
    per_source: int = PER_SOURCE,
    input_size: int = INPUT_SIZE,
) -> tuple[object, ImageScreen, dict]:
    """Fit both checks; returns (feature model, screen, manifest without file hashes).
    `input_size` other than the weights' 224 is for tests on small images."""
    model = build_screening_features(input_size, weights)
    runner = FeatureRunner(model)
    train = Described(runner, per_source_sample(assignment.role("train"), per_source))
    calibration = Described(runner, assignment.role("calibration"))
    report = Described(runner, assignment.role("report"))
    clinical_root = Path(data_root) / CLINICAL_SET
    clinical_set = data.load_dataset(clinical_root)
    clinical = Described(runner, clinical_set)
    fit_ids, _ = patient_split(clinical_root / "labels.csv")
    clinical_fit = np.isin(clinical_set.image_ids, sorted(fit_ids))

    lesion = LesionCheck.fit(
        (train.features, train.statistics, train.sources),
        (calibration.features, calibration.statistics, calibration.sources),
    )
    modality = fit_modality_check(
        (train.features, train.statistics),
        clinical.pick(clinical_fit),
        (calibration.features, calibration.statistics, calibration.sources),
    )
    screen = ImageScreen(lesion, modality)

    def no_estimate(described: Described, mask=None):
        """(refused, refused as not a lesion, refused as not dermoscopic), each (n,) bool."""
        mask = np.ones(len(described.sources), bool) if mask is None else mask
        scores = screen.scores_statistics(*described.pick(mask))
        return scores.no_estimate, scores.ood > 1.0, scores.clinical > scores.clinical_limit

    report_refused, report_not_lesion, report_clinical = no_estimate(report)
    calibration_refused = no_estimate(calibration)[0]
    held_refused, held_not_lesion, held_clinical = no_estimate(clinical, ~clinical_fit)
    summary = assignment.summary()
    manifest = {
        "name": SCREEN_FOLDER,
        "input_size": input_size,
        "features": {
            "model": "MobileNet 0.75, ImageNet weights, frozen",
            "pooled_blocks": list(SCREENING_BLOCKS),
            "weights": str(weights if weights == "imagenet" else Path(weights).name),
        },
        "method": {
            "lesion": (
                "per dermoscopic source: larger of two Mahalanobis distances (Ledoit-Wolf) from its "
                "training images, screening features and colour/texture statistics, each over a "
                f"limit keeping {KEEP_EACH:.2%} of its calibration images; an image passes when "
                "it is within the limits of at least one source"
            ),
            "modality": (
                "logistic regression (C=0.003, balanced) on the screening features and image "
                "statistics, dermoscopic training images vs PAD-UFES-20 smartphone photos (half "
                f"of its patients); limit keeps {KEEP_DERMOSCOPIC:.0%} of each source's "
                "calibration images"
            ),
        },
        "clinical_limit": modality.limit,
        "data": {
            "recipe": assignment.recipe.as_dict(),
            "roles": {role: summary[role]["ids_sha256"] for role in ("train", "calibration", "report")},
            "fit": {
                "dermoscopic": {s: int((train.sources == s).sum()) for s in sorted(set(train.sources))},
                "clinical_images": int(clinical_fit.sum()),
            },
        },
        "figures": {
            "calibration_given_an_estimate (chose the limits)": kept_shares(
                ~calibration_refused, calibration.sources
            ),
            "report_given_an_estimate": kept_shares(~report_refused, report.sources),
            "report_refused_as_not_a_lesion": float(report_not_lesion.mean()),
            "report_refused_as_not_dermoscopic": float(report_clinical.mean()),
            "clinical_held_out": {
                "images": int((~clinical_fit).sum()),
                "patients": "the other half of PAD-UFES-20's patients",
                "refused": float(held_refused.mean()),
                "refused_as_not_dermoscopic": float(held_clinical.mean()),
                "refused_as_not_a_lesion": float(held_not_lesion.mean()),
            },
            "non_lesion_pictures": non_lesion_check(
                lambda batch: screen.scores(runner(batch), batch), input_size
            ),
        },
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    return model, screen, manifest


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description="Fit the screen every bundle shares.")
    parser.add_argument("--recipe", required=True, help="the bundles' recipe, e.g. recipes/dermoscopic.json")
    parser.add_argument(
        "--data-root", required=True, help="folder with the recipe's datasets and pad_ufes20_clinical"
    )
    parser.add_argument(
        "--weights", required=True, help='MobileNet 0.75 ImageNet weights: a .weights.h5 file or "imagenet"'
    )
    parser.add_argument("--out", default=f"models/{SCREEN_FOLDER}")
    parser.add_argument("--per-source", type=int, default=PER_SOURCE, help="training images per source")
    args = parser.parse_args(argv)

    assignment = roles.assign_roles(roles.read_recipe(args.recipe), args.data_root)
    model, screen, manifest = fit_screen(assignment, args.data_root, args.weights, args.per_source)
    save_screen(args.out, model, screen, manifest)
    print(json.dumps(manifest["figures"], indent=2))
    print(
        "now re-run `python -m medal_core calibrate --bundle models/NAME --data-root ...` on "
        "each bundle: its threshold counts the images this screen refuses"
    )
    return manifest


if __name__ == "__main__":
    main()
