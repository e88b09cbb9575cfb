"""Which model bundles the app can offer, and what is wrong with the others.

    catalog = scan("models")
    catalog.bundles      # {"mobilenet": Bundle, ...}, verified, loaded without the model
    catalog.broken       # [("custom_cnn", "models/custom_cnn/model.keras does not match ..."), ...]

A broken bundle never stops the app: it is listed with the reason and the fix, and the
app keeps working with the others. Loading the Keras model itself is left to the caller
(`Predictor.from_folder`), which is slow and done once per process.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from medal_core.bundles.bundle import (
    HISTORY_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    PREDICTIONS_FILE,
    REPORT_PREDICTIONS_FILE,
    Bundle,
    BundleError,
    load_bundle,
    verify_sha256,
)
from medal_core.bundles.screening import (
    SCREEN_FILES,
    SCREEN_FOLDER,
    SCREEN_MANIFEST,
    screen_folder_for,
    verify_screen,
)

MODELS_DIR_ENV = "MEDAL_MODELS_DIR"
# The app's default, best first: the bundle with the highest ROC AUC on its selection set
# (mobilenetv2_cc_ensemble 0.882, mobilenetv2_cc 0.874, mobilenetv2 0.870, mobilenet 0.817
# there, 8 views; the report set chose nothing).
PREFERRED_BUNDLES = ("mobilenetv2_cc_ensemble", "mobilenetv2_cc", "mobilenetv2", "mobilenet")

TRAIN_HINT = (
    "python -m medal_core train --arch mobilenet --data ../shared/data/isic2017 \\\n"
    "    --weights ../shared/weights/mobilenet_0.75_224_no_top_imagenet.weights.h5 \\\n"
    "    --out models/mobilenet"
)


@dataclass(frozen=True)
class Catalog:
    """The bundles found in one models folder.

    bundles: folder name → `Bundle` (manifest, predictions; `model` is None), in name
    order. broken: (folder name, message saying what is wrong and how to fix it).
    """

    models_dir: Path
    bundles: dict[str, Bundle] = field(default_factory=dict)
    broken: list[tuple[str, str]] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return list(self.bundles)

    @property
    def empty(self) -> bool:
        """True when no bundle can be used."""
        return not self.bundles

    def default_name(self, preferred: tuple[str, ...] = PREFERRED_BUNDLES) -> str | None:
        """The first usable bundle of `preferred`, else the first usable one (None if none)."""
        for name in preferred:
            if name in self.bundles:
                return name
        return next(iter(self.bundles), None)

    def help_text(self) -> str:
        """What to do when no bundle is usable (Markdown)."""
        where = f"`{self.models_dir}`"
        problem = (
            f"No usable model bundle in {where}."
            if self.models_dir.is_dir()
            else f"The models folder {where} does not exist."
        )
        return (
            f"{problem} Train one with\n\n```\n{TRAIN_HINT}\n```\n\nor restore the "
            f"bundles from the repository (`git checkout -- models/`). Set "
            f"`{MODELS_DIR_ENV}` to use another folder."
        )


def models_dir_from_env(default: str | Path) -> Path:
    """The models folder: `$MEDAL_MODELS_DIR` when set, else `default`."""
    return Path(os.environ.get(MODELS_DIR_ENV) or default)


def candidate_folders(models_dir: str | Path) -> list[Path]:
    """Sub-folders of `models_dir` that are or were meant to be bundles (hidden ones,
    __pycache__ and the shared screen are skipped), in name order."""
    models_dir = Path(models_dir)
    if not models_dir.is_dir():
        return []
    return sorted(
        p
        for p in models_dir.iterdir()
        if p.is_dir() and not p.name.startswith((".", "_")) and not (p / SCREEN_MANIFEST).is_file()
    )


def fingerprint(models_dir: str | Path) -> tuple:
    """A cheap summary of the folder's bundle files (names, sizes, modification times):
    it changes whenever a bundle is added, removed, retrained or edited, so it can key a
    cache of `scan`."""
    items: list[tuple[str, str, int | None, int | None]] = []
    bundle_files = (MANIFEST_FILE, MODEL_FILE, PREDICTIONS_FILE, REPORT_PREDICTIONS_FILE, HISTORY_FILE)
    screen = Path(models_dir) / SCREEN_FOLDER  # the shared screen: a refit one must be re-checked
    pairs = [(folder, name) for folder in candidate_folders(models_dir) for name in bundle_files]
    pairs += [(screen, name) for name in (SCREEN_MANIFEST, *SCREEN_FILES)]
    for folder, name in pairs:
        path = folder / name
        if path.is_file():
            stat = path.stat()
            items.append((folder.name, name, stat.st_size, stat.st_mtime_ns))
        else:
            items.append((folder.name, name, None, None))
    return (str(models_dir), tuple(items))


def signature(bundle: Bundle) -> str:
    """A short digest of the bundle's manifest, which records the sha256 of its model and
    of the shared screen it was calibrated with, its temperature and threshold: it
    changes whenever anything the app loads from the bundle changes, so it keys caches
    of loaded models. Computed once per Bundle object (pages ask for it several times
    per run)."""
    known = _signatures.get(id(bundle))
    if known is not None and known[0] is bundle:
        return known[1]
    text = json.dumps(bundle.manifest, sort_keys=True, default=str)
    digest = hashlib.sha256(text.encode()).hexdigest()[:20]
    if len(_signatures) > 64:  # bundles come and go with rescans: keep it small
        _signatures.clear()
    _signatures[id(bundle)] = (bundle, digest)
    return digest


_signatures: dict[int, tuple[Bundle, str]] = {}  # id → (the bundle, kept alive; its signature)


def check_bundle(folder: str | Path) -> Bundle:
    """Load a bundle without its Keras model, but verify every file's sha256, so that a
    damaged model is reported here rather than on first use. Raises BundleError."""
    folder = Path(folder)
    if not (folder / MANIFEST_FILE).is_file() and (folder / "checkpoints").is_dir():
        raise BundleError(
            f"{folder} holds training checkpoints but no bundle yet: training "
            "is still running or was interrupted. Re-run the same "
            "`python -m medal_core train ...` command to finish it."
        )
    bundle = load_bundle(folder, load_model=False)
    verify_sha256(folder / MODEL_FILE, bundle.manifest["model_sha256"])
    if "screening" in bundle.manifest:
        verify_screen(screen_folder_for(folder), bundle.manifest["screening"].get("sha256", ""))
    return bundle


def scan(models_dir: str | Path) -> Catalog:
    """Check every candidate folder of `models_dir`; never raises for a bad bundle."""
    models_dir = Path(models_dir)
    bundles, broken = {}, []
    for folder in candidate_folders(models_dir):
        try:
            bundles[folder.name] = check_bundle(folder)
        except BundleError as error:
            broken.append((folder.name, str(error)))
        except Exception as error:  # noqa: BLE001 - any unreadable file means "broken"
            broken.append(
                (
                    folder.name,
                    f"{folder} could not be read ({error}); restore it "
                    "from the repository or train it again.",
                )
            )
    return Catalog(models_dir, bundles, broken)


def read_history(folder: str | Path) -> dict[str, list[float]]:
    """The training log `history.csv` as column → values, one per epoch in the order
    they ran (phases follow each other; the `epoch` column restarts per phase, so an
    added `step` column counts epochs overall). Empty when there is no log."""
    path = Path(folder) / HISTORY_FILE
    if not path.is_file():
        return {}
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    columns: dict[str, list[float]] = {}
    for row in rows:
        for key, value in row.items():
            try:
                columns.setdefault(key, []).append(float(value))
            except (TypeError, ValueError):
                columns.setdefault(key, []).append(float("nan"))
    if rows:
        columns["step"] = [float(i + 1) for i in range(len(rows))]
    return columns
