"""Labelled dermoscopy datasets: discovery, validation split and tf.data pipelines.

Three layouts are understood (see `load_dataset`):

* **ISIC** — a folder with `labels.csv` holding at least `path,label,split`
  (`path` relative to the folder), as in `../shared/data/isic2017`.
* **Class folders** — `ROOT/{benign,malignant}/*`, optionally below split folders
  `ROOT/{train,val,test}/{benign,malignant}/*`.
* **CSV manifest** — a file with `filepath,label` (and optionally `split`); labels are
  mapped to the two classes with `ISIC_LABEL_MAP` or a mapping you give.

Every image is decoded by one function, `load_image`, for training and evaluation alike,
so the model sees the same pixels in both.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from medal_core.data.intake import IntakeError, read_upload

CLASS_NAMES = ("benign", "malignant")
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
SPLITS = ("train", "val", "test")

# The classic ISIC 2017 task 3 mapping: melanoma against everything else.
ISIC_LABEL_MAP = {
    "benign": "benign",
    "nevus": "benign",
    "seborrheic_keratosis": "benign",
    "malignant": "malignant",
    "melanoma": "malignant",
}


class DatasetError(ValueError):
    """A dataset that cannot be used, with a message that says why and where."""


# Per-image metadata a layout may carry besides path, label and split ("" when absent).
METADATA_FIELDS = ("sources", "diagnoses", "lesion_ids", "folds")


@dataclass(frozen=True)
class Dataset:
    """Image paths with binary labels (0 = benign, 1 = malignant) and per-image metadata.

    All arrays have shape (n,). `splits` holds "train", "val", "test" or "" when the
    layout does not say. `sources` names the dataset an image came from (its folder),
    `diagnoses` the finer diagnosis (e.g. "nv", "bcc"), `lesion_ids` the lesion an
    image shows (several images may show one lesion) and `folds` a precomputed fold;
    each is "" where unknown.
    """

    paths: np.ndarray
    labels: np.ndarray
    splits: np.ndarray
    # Given as None (or left out), each is filled with "" in __post_init__: never None after.
    sources: np.ndarray = None  # type: ignore[assignment]
    diagnoses: np.ndarray = None  # type: ignore[assignment]
    lesion_ids: np.ndarray = None  # type: ignore[assignment]
    folds: np.ndarray = None  # type: ignore[assignment]

    def __post_init__(self):
        for name in METADATA_FIELDS:
            if getattr(self, name) is None:
                object.__setattr__(self, name, np.full(len(self.paths), "", dtype=object))
            else:
                object.__setattr__(self, name, np.asarray(getattr(self, name), dtype=object))

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def image_ids(self) -> np.ndarray:
        return np.array([Path(p).stem for p in self.paths])

    def subset(self, mask: np.ndarray) -> "Dataset":
        """The images where `mask` (boolean or integer index array) selects."""
        return Dataset(
            self.paths[mask],
            self.labels[mask],
            self.splits[mask],
            *(getattr(self, name)[mask] for name in METADATA_FIELDS),
        )

    def select_split(self, split: str) -> "Dataset":
        """The images of one split; `split="all"` keeps every image."""
        if split == "all":
            return self
        chosen = self.subset(self.splits == split)
        if len(chosen) == 0:
            found = sorted(set(self.splits) - {""}) or ["none"]
            raise DatasetError(f"no images in split '{split}' (splits present: {', '.join(found)})")
        return chosen

    def summary(self) -> dict:
        """Counts per class and prevalence, for manifests and logs."""
        n_malignant = int(self.labels.sum())
        return {
            "images": len(self),
            "benign": len(self) - n_malignant,
            "malignant": n_malignant,
            "prevalence": round(n_malignant / max(len(self), 1), 4),
        }


# ---------------------------------------------------------------- layouts


def load_dataset(
    root: str | Path, manifest: str | Path | None = None, label_map: dict[str, str] | None = None
) -> Dataset:
    """Read a dataset in any of the three layouts and check it is usable.

    `manifest` names a CSV manifest (relative paths in it are taken from `root`); without
    it, `root/labels.csv` means the ISIC layout, otherwise class folders are expected.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"data folder not found: {root}")
    if manifest is not None:
        dataset = read_csv_manifest(manifest, root=root, label_map=label_map)
    elif (root / "labels.csv").is_file():
        dataset = read_csv_manifest(root / "labels.csv", root=root, label_map=label_map)
    else:
        dataset = read_class_folders(root)
    check_dataset(dataset, root)
    return dataset


def read_class_folders(root: Path) -> Dataset:
    """`root/{benign,malignant}/*`, or the same below `root/{train,val,test}/`."""
    split_dirs = [(s, root / s) for s in SPLITS if (root / s).is_dir()]
    if not split_dirs:
        split_dirs = [("", root)]
    paths, labels, splits = [], [], []
    for split, folder in split_dirs:
        for label, class_name in enumerate(CLASS_NAMES):
            class_dir = folder / class_name
            if not class_dir.is_dir():
                continue
            for path in sorted(class_dir.iterdir()):
                if path.suffix.lower() in IMAGE_SUFFIXES:
                    paths.append(str(path))
                    labels.append(label)
                    splits.append(split)
    if not paths:
        raise DatasetError(
            f"no images found in {root}: expected labels.csv, or images in "
            f"{root}/benign and {root}/malignant (optionally below train/val/test)"
        )
    return _as_dataset(paths, labels, splits, sources=[root.name] * len(paths))


def read_csv_manifest(
    csv_path: str | Path, root: str | Path | None = None, label_map: dict[str, str] | None = None
) -> Dataset:
    """A CSV with a path column (`filepath` or `path`), a `label` column and an
    optional `split` column. Labels go through `label_map` (default `ISIC_LABEL_MAP`)."""
    csv_path = Path(csv_path)
    if not csv_path.is_file():
        raise DatasetError(f"manifest not found: {csv_path}")
    base = Path(root) if root is not None else csv_path.parent
    label_map = {k.lower(): v for k, v in (label_map or ISIC_LABEL_MAP).items()}
    with csv_path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows:
        raise DatasetError(f"manifest {csv_path} has no rows")
    path_key = "filepath" if "filepath" in rows[0] else "path"
    for key in (path_key, "label"):
        if key not in rows[0]:
            raise DatasetError(f"manifest {csv_path} needs a '{key}' column; found {list(rows[0])}")
    paths, labels, splits = [], [], []
    metadata: dict[str, list[str]] = {"diagnoses": [], "lesion_ids": [], "folds": []}
    for line, row in enumerate(rows, start=2):
        raw_label = row["label"].strip().lower()
        if raw_label not in label_map:
            raise DatasetError(
                f"{csv_path}, line {line}: label '{row['label']}' is not in the label mapping "
                f"({', '.join(sorted(label_map))})"
            )
        class_name = label_map[raw_label]
        if class_name not in CLASS_NAMES:
            raise DatasetError(
                f"label mapping sends '{raw_label}' to '{class_name}', which is not one of {CLASS_NAMES}"
            )
        path = Path(row[path_key])
        paths.append(str(path if path.is_absolute() else base / path))
        labels.append(CLASS_NAMES.index(class_name))
        splits.append((row.get("split") or "").strip())
        for name, column in (("lesion_ids", "lesion_id"), ("folds", "fold")):
            metadata[name].append((row.get(column) or "").strip())
        metadata["diagnoses"].append(_diagnosis(row))
    return _as_dataset(paths, labels, splits, sources=[base.name] * len(paths), **metadata)


def _diagnosis(row: dict) -> str:
    """The row's `diagnosis`, else what ISIC 2017's 0/1 columns say, else ""."""
    if (row.get("diagnosis") or "").strip():
        return row["diagnosis"].strip()
    if "melanoma" in row and "seborrheic_keratosis" in row:
        if (row["melanoma"] or "").strip() == "1":
            return "melanoma"
        return "seborrheic keratosis" if (row["seborrheic_keratosis"] or "").strip() == "1" else "nevus"
    return ""


def check_dataset(dataset: Dataset, root: Path) -> None:
    """Refuse datasets training cannot use: empty, one class only, or missing files."""
    if len(dataset) == 0:
        raise DatasetError(f"no images found in {root}")
    present = set(dataset.labels.tolist())
    if present != {0, 1}:
        only = CLASS_NAMES[present.pop()]
        raise DatasetError(f"{root} holds only '{only}' images: both classes are needed")
    for path in dataset.paths:
        if not Path(path).is_file():
            raise DatasetError(f"image listed but not found: {path}")


def _as_dataset(paths, labels, splits, **metadata) -> Dataset:
    return Dataset(
        np.array(paths, dtype=str), np.array(labels, dtype=np.int32), np.array(splits, dtype=str), **metadata
    )


# ---------------------------------------------------------------- decoding


def load_image(path: str | Path, size: int) -> np.ndarray:
    """Decode one image file to uint8 RGB of shape (size, size, 3).

    The decoding is the app's own (`intake.read_upload`: EXIF orientation, transparency
    over mid-grey, high bit depths scaled, not clipped), so that training, evaluation and
    the app see the same pixels for the same file. Only the size limits of uploads are
    lifted (a dataset may hold large lossless files, or small test images). The
    resize is Pillow's antialiased bilinear, the same that `resize_for_model` uses on uploads.
    """
    return resize_for_model(decode_file(path), size)


def decode_file(path: str | Path) -> np.ndarray:
    """The app's decoding of a dataset file (see `load_image`), at its own size."""
    try:
        encoded = Path(path).read_bytes()
        return read_upload(encoded, max_bytes=max(len(encoded), 1), min_side=1).rgb
    except (OSError, IntakeError) as error:
        raise DatasetError(f"cannot read image {path}: {error}") from error


def resize_for_model(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize an (h, w, 3) uint8 RGB array to (size, size, 3) uint8."""
    if rgb.shape[:2] == (size, size):
        return np.ascontiguousarray(rgb, dtype=np.uint8)
    resized = Image.fromarray(rgb).resize((size, size), Image.Resampling.BILINEAR)
    return np.asarray(resized, dtype=np.uint8)


def load_images(paths, size: int) -> np.ndarray:
    """Decode many files to a (n, size, size, 3) uint8 array, naming any bad file."""
    return load_images_at(paths, (size,))[0]


def load_images_at(paths, sizes: tuple[int, ...]) -> list[np.ndarray]:
    """Decode each file once and resize it to every one of `sizes` (a model's and the
    screen's): one (n, size, size, 3) uint8 array per size, in the order given."""
    arrays = [np.empty((len(paths), size, size, 3), dtype=np.uint8) for size in sizes]
    for i, path in enumerate(paths):
        rgb = decode_file(path)
        for array, size in zip(arrays, sizes):
            array[i] = resize_for_model(rgb, size)
    return arrays
