"""Model bundles: one folder per trained model, written once and verified on every load.

    models/NAME/
        model.keras            the Keras model (flat graph, see models.py)
        manifest.json          what the model is, how it was trained and chosen, its figures
        val_predictions.csv    image_id,label,logit,probability[,source,diagnosis] on the
                               set the threshold was chosen on (its calibration set)
        report_predictions.csv the same on its report set, which chose nothing (optional)
        history.csv            the training log, one row per epoch

Which images get an estimate at all is the shared screen's answer (`models/screening/`,
`medal_core.bundles.screening`): the manifest's `screening` entry records the sha256 of
the screen the bundle was calibrated with.

`load_bundle` refuses a bundle that is missing a file, has a malformed or incomplete
manifest, or whose model file does not match the sha256 in the manifest; the model is
loaded in Keras safe mode, so a bundle cannot smuggle in code (e.g. a Lambda layer).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from medal_core.bundles.files import BundleError, load_keras_model, sha256_file, verify_sha256
from medal_core.bundles.screening import LoadedScreen, load_screen, screen_folder_for
from medal_core.evaluation.metrics import calibrated_probability

__all__ = ["BundleError", "sha256_file", "verify_sha256", "Bundle", "Predictions", "load_bundle"]

MODEL_FILE = "model.keras"
MANIFEST_FILE = "manifest.json"
PREDICTIONS_FILE = "val_predictions.csv"
REPORT_PREDICTIONS_FILE = "report_predictions.csv"
HISTORY_FILE = "history.csv"
FORMAT_VERSION = 1

REQUIRED_FIELDS: dict[str, type | tuple[type, ...]] = {
    "format_version": int,
    "name": str,
    "architecture": str,
    "input_size": int,
    "class_names": list,
    "backbone_weights": dict,
    "gradcam_layer": str,
    "test_time_views": int,
    "temperature": (int, float),
    "threshold": dict,
    "data": dict,
    "validation_metrics": dict,
    "versions": dict,
    "model_sha256": str,
}


@dataclass(frozen=True)
class Predictions:
    """Stored predictions on one set of images, each array of shape (n,)."""

    image_ids: np.ndarray
    labels: np.ndarray  # 0 benign, 1 malignant
    logits: np.ndarray  # raw model logits (mean over test-time views if used)
    probabilities: np.ndarray  # Bundle.calibrate(logits)
    sources: np.ndarray | None = None  # dataset of each image ("" unknown)
    diagnoses: np.ndarray | None = None  # finer diagnosis, e.g. "nv", "bcc" ("" unknown)
    no_estimate: np.ndarray | None = None  # bool: the app gives this image no estimate

    @classmethod
    def of(cls, dataset, logits, probabilities, no_estimate=None) -> "Predictions":
        """Predictions for the images of a `data.Dataset`, metadata kept."""
        return cls(
            dataset.image_ids,
            dataset.labels,
            np.asarray(logits),
            np.asarray(probabilities),
            np.asarray(dataset.sources, dtype=str),
            np.asarray(dataset.diagnoses, dtype=str),
            None if no_estimate is None else np.asarray(no_estimate, bool),
        )

    @property
    def estimated(self) -> np.ndarray:
        """(n,) bool: the images the app gives an estimate (all, when not recorded)."""
        if self.no_estimate is None:
            return np.ones(len(self.labels), bool)
        return ~self.no_estimate


@dataclass(frozen=True)
class Bundle:
    folder: Path
    manifest: dict
    predictions: Predictions
    model: object = None  # keras.Model, or None when loaded with load_model=False
    screen: LoadedScreen | None = None  # the shared screen; None when none is recorded
    report_predictions: Predictions | None = None  # on its report set, when it has one

    @property
    def name(self) -> str:
        return self.manifest["name"]

    @property
    def threshold(self) -> float:
        return float(self.manifest["threshold"]["value"])

    @property
    def temperature(self) -> float:
        return float(self.manifest["temperature"])

    @property
    def logit_offset(self) -> float:
        """log(w_malignant / w_benign) of the training class weights (0 for bundles that
        predate it): weighting the classes shifts every logit by this much."""
        return float(self.manifest.get("logit_offset", 0.0))

    def calibrate(self, logits):
        """P(melanoma) from raw logits: the class-weighting shift removed, then the
        fitted temperature applied. Same shape as `logits`."""
        return calibrated_probability(logits, self.logit_offset, self.temperature)


# ---------------------------------------------------------------- writing


def write_predictions(path: Path, predictions: Predictions) -> None:
    n = len(predictions.image_ids)
    extra = {
        name: values
        for name, values in (
            ("source", predictions.sources),
            ("diagnosis", predictions.diagnoses),
            ("no_estimate", None if predictions.no_estimate is None else predictions.no_estimate.astype(int)),
        )
        if values is not None
    }
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["image_id", "label", "logit", "probability", *extra])
        for i in range(n):
            # Shortest exact repr: the manifest's threshold is one of these probabilities,
            # and rounding could move that case below it when the file is read back.
            writer.writerow(
                [
                    predictions.image_ids[i],
                    int(predictions.labels[i]),
                    repr(float(predictions.logits[i])),
                    repr(float(predictions.probabilities[i])),
                    *(values[i] for values in extra.values()),
                ]
            )


def save_bundle(
    folder: str | Path,
    model,
    manifest: dict,
    predictions: Predictions,
    history_csv: str | Path | None = None,
    report_predictions: Predictions | None = None,
) -> Path:
    """Write a bundle; the manifest gets the model file's sha256 and the format version."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / MODEL_FILE)
    manifest = {
        **manifest,
        "format_version": FORMAT_VERSION,
        "model_sha256": sha256_file(folder / MODEL_FILE),
    }
    missing = validate_manifest(manifest)
    if missing:
        raise ValueError(f"manifest is incomplete: {missing}")
    write_predictions(folder / PREDICTIONS_FILE, predictions)
    if report_predictions is not None:
        write_predictions(folder / REPORT_PREDICTIONS_FILE, report_predictions)
    if history_csv is not None and Path(history_csv).exists():
        (folder / HISTORY_FILE).write_text(Path(history_csv).read_text())
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest, indent=2) + "\n")
    return folder


# ---------------------------------------------------------------- reading


def validate_manifest(manifest) -> list[str]:
    """Problems with a manifest's fields (empty when it is complete and well typed)."""
    if not isinstance(manifest, dict):
        return ["the manifest is not a JSON object"]
    problems = []
    for field, kind in REQUIRED_FIELDS.items():
        if field not in manifest:
            problems.append(f"missing field '{field}'")
        elif not isinstance(manifest[field], kind) or isinstance(manifest[field], bool):
            problems.append(f"field '{field}' has the wrong type ({type(manifest[field]).__name__})")
    if not problems and "value" not in manifest["threshold"]:
        problems.append("field 'threshold' has no 'value'")
    return problems


def read_manifest(folder: str | Path) -> dict:
    """Parse and validate `folder/manifest.json`, or raise BundleError."""
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not folder.is_dir():
        raise BundleError(
            f"model bundle not found: {folder}. Train one with "
            f"`python -m medal_core train ... --out {folder}`."
        )
    if not path.is_file():
        raise BundleError(
            f"{folder} has no {MANIFEST_FILE}: the bundle is incomplete. "
            "Re-run training or restore the folder from the repository."
        )
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise BundleError(f"{path} is not valid JSON ({error}); restore it from the repository.") from error
    problems = validate_manifest(manifest)
    if problems:
        raise BundleError(f"{path} is malformed: {'; '.join(problems)}.")
    return manifest


def read_predictions(path: Path) -> Predictions:
    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle))

        def text(column: str) -> np.ndarray:
            return np.array([r.get(column, "") or "" for r in rows], dtype=str)

        predictions = Predictions(
            np.array([r["image_id"] for r in rows], dtype=str),
            np.array([int(r["label"]) for r in rows], dtype=np.int64),
            np.array([float(r["logit"]) for r in rows]),
            np.array([float(r["probability"]) for r in rows]),
            sources=text("source"),
            diagnoses=text("diagnosis"),
            no_estimate=(
                np.array([r["no_estimate"] == "1" for r in rows])
                if rows and "no_estimate" in rows[0]
                else None
            ),
        )
    except (KeyError, ValueError, TypeError) as error:
        raise BundleError(f"{path} is malformed ({error!r}); restore it from the repository.") from error
    if len(rows) == 0 or len(set(predictions.labels.tolist())) < 2:
        raise BundleError(f"{path} must hold predictions for both classes.")
    return predictions


def load_bundle(folder: str | Path, load_model: bool = True, load_screen_too: bool = True) -> Bundle:
    """Read and verify a bundle; with `load_model`, also load its Keras model (safe mode)
    and, with `load_screen_too`, the shared screen it was calibrated with."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    for required in (MODEL_FILE, PREDICTIONS_FILE):
        if not (folder / required).is_file():
            raise BundleError(
                f"{folder} has no {required}: the bundle is incomplete. "
                "Re-run training or restore the folder from the repository."
            )
    predictions = read_predictions(folder / PREDICTIONS_FILE)
    report = (
        read_predictions(folder / REPORT_PREDICTIONS_FILE)
        if (folder / REPORT_PREDICTIONS_FILE).is_file()
        else None
    )
    if "screening" not in manifest and ("ood" in manifest or "modality" in manifest):
        raise BundleError(
            f"{folder} predates the shared screen (its manifest records its own checks): "
            f"re-run `python -m medal_core calibrate --bundle {folder} --data-root DATA`."
        )
    model = screen = None
    if load_model:
        verify_sha256(folder / MODEL_FILE, manifest["model_sha256"])
        model = load_keras_model(folder / MODEL_FILE)
        if load_screen_too and "screening" in manifest:
            screen = load_screen(screen_folder_for(folder), manifest["screening"].get("sha256", ""))
        for layer in ("logit", manifest["gradcam_layer"]):
            try:
                model.get_layer(layer)
            except ValueError as error:
                raise BundleError(
                    f"{folder / MODEL_FILE} has no layer '{layer}' named in its manifest."
                ) from error
    return Bundle(folder, manifest, predictions, model, screen, report)


def find_bundles(models_dir: str | Path) -> list[Path]:
    """Folders directly under `models_dir` that look like bundles (hold a manifest)."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    return sorted(p for p in models_dir.iterdir() if p.is_dir() and (p / MANIFEST_FILE).exists())
