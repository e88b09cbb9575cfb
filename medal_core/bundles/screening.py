"""The shared screen's folder: written once by `fit-screening`, verified on every load.

    models/screening/
        screening.json    what the screen is, the roles it was fitted on, its figures and
                          the sha256 of each file below
        features.keras    the frozen feature extractor (Keras safe mode)
        lesion.npz        the "is this a lesion image?" check, one detector per source
        modality.npz      the "is it a dermoscopic image?" check

A bundle records the sha256 of the `screening.json` it was calibrated with (its threshold
counts the images this screen refuses as sent onwards), and `load_bundle` refuses a
screen that differs from it. The manifest is not called manifest.json, so the folder is
never taken for a model bundle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from medal_core.bundles.files import BundleError, load_keras_model, sha256_file, verify_sha256
from medal_core.screening.modality import MODALITY_FILE, ModalityCheck
from medal_core.screening.screen import LESION_FILE, ImageScreen, LesionCheck, ScreenScores

if TYPE_CHECKING:  # TensorFlow is imported only when a screen is loaded
    from medal_core.modeling.runner import FeatureRunner

SCREEN_FOLDER = "screening"
SCREEN_MANIFEST = "screening.json"
FEATURES_FILE = "features.keras"
SCREEN_FILES = (FEATURES_FILE, LESION_FILE, MODALITY_FILE)
# Where the app's own screen lives: a bundle elsewhere (a training run's folder) uses it
# unless a screen sits beside it.
DEFAULT_SCREEN = Path(__file__).resolve().parents[2] / "models" / SCREEN_FOLDER


@dataclass
class LoadedScreen:
    """The screen ready to score images: feature extractor, checks and manifest."""

    folder: Path
    manifest: dict
    screen: ImageScreen
    runner: FeatureRunner

    @property
    def input_size(self) -> int:
        return int(self.manifest["input_size"])

    @property
    def manifest_sha256(self) -> str:
        return sha256_file(self.folder / SCREEN_MANIFEST)

    def scores(self, images: np.ndarray) -> ScreenScores:
        """Scores for uint8 RGB images (n, input_size, input_size, 3)."""
        return self.screen.scores(self.runner(images), images)


def screen_folder_for(bundle_folder: str | Path) -> Path:
    """The screen a bundle uses: one beside it (models/screening for models/NAME), else
    the app's own."""
    beside = Path(bundle_folder).resolve().parent / SCREEN_FOLDER
    return beside if (beside / SCREEN_MANIFEST).is_file() else DEFAULT_SCREEN


def save_screen(folder: str | Path, model, screen: ImageScreen, manifest: dict) -> Path:
    """Write the screen's files and its manifest (with each file's sha256)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save(folder / FEATURES_FILE)
    screen.lesion.save(folder / LESION_FILE)
    screen.modality.save(folder / MODALITY_FILE)
    manifest = {**manifest, "files": {name: sha256_file(folder / name) for name in SCREEN_FILES}}
    (folder / SCREEN_MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return folder


def read_screen_manifest(folder: str | Path) -> dict:
    """Parse `folder/screening.json`, or raise BundleError saying how to get the screen."""
    path = Path(folder) / SCREEN_MANIFEST
    if not path.is_file():
        raise BundleError(
            f"the shared screen is missing ({path}): restore models/{SCREEN_FOLDER}/ from the "
            "repository or fit it with `python -m medal_core fit-screening ...`."
        )
    try:
        manifest = json.loads(path.read_text())
        manifest["files"], manifest["input_size"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as error:
        raise BundleError(f"{path} is malformed ({error!r}); restore it from the repository.") from error
    return manifest


def verify_screen(folder: str | Path, expected_sha256: str | None = None) -> dict:
    """The manifest of the screen in `folder` after checking each file against it and
    the manifest against `expected_sha256` (the one a bundle was calibrated with); raises
    BundleError. Loads no model."""
    folder = Path(folder)
    manifest = read_screen_manifest(folder)
    if expected_sha256 is not None and sha256_file(folder / SCREEN_MANIFEST) != expected_sha256:
        raise BundleError(
            f"{folder / SCREEN_MANIFEST} is not the screen this bundle was calibrated with "
            "(its sha256 differs): re-run `python -m medal_core calibrate --bundle ... "
            "--data-root ...` on the bundle, or restore the screen from the repository."
        )
    for name in SCREEN_FILES:
        verify_sha256(folder / name, manifest["files"].get(name, ""))
    return manifest


def load_screen(folder: str | Path, expected_sha256: str | None = None) -> LoadedScreen:
    """Read and verify the screen in `folder` (see `verify_screen`) and load its model."""
    from medal_core.modeling.runner import FeatureRunner  # deferred: TensorFlow

    folder = Path(folder)
    manifest = verify_screen(folder, expected_sha256)
    try:
        lesion = LesionCheck.load(folder / LESION_FILE)
        modality = ModalityCheck.load(folder / MODALITY_FILE)
    except (KeyError, ValueError, OSError) as error:
        raise BundleError(
            f"{folder} holds checks this version cannot read ({error}); refit it with "
            "`python -m medal_core fit-screening ...`."
        ) from error
    screen = ImageScreen(lesion, modality)
    return LoadedScreen(folder, manifest, screen, FeatureRunner(load_keras_model(folder / FEATURES_FILE)))
