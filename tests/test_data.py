"""Dataset layouts, their error messages, the validation split and image decoding."""

import csv

import numpy as np
import pytest
from helpers import write_class_folders, write_image
from PIL import Image

from medal_core.data import datasets as data
from medal_core.data.datasets import DatasetError


def write_csv(path, header, rows):
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


# ---------------------------------------------------------------- layouts


def test_isic_layout_reads_labels_csv_with_splits(tmp_path):
    rows = [
        ("ISIC_0000000", "train", 0, 0, "benign", "train/benign/ISIC_0000000.jpg"),
        ("ISIC_0000001", "train", 1, 0, "malignant", "train/malignant/ISIC_0000001.jpg"),
        ("ISIC_0000002", "val", 0, 1, "benign", "val/benign/ISIC_0000002.jpg"),
        ("ISIC_0000003", "val", 1, 0, "malignant", "val/malignant/ISIC_0000003.jpg"),
    ]
    for row in rows:
        write_image(tmp_path / row[-1])
    write_csv(
        tmp_path / "labels.csv",
        ["image_id", "split", "melanoma", "seborrheic_keratosis", "label", "path"],
        rows,
    )

    dataset = data.load_dataset(tmp_path)

    assert list(dataset.labels) == [0, 1, 0, 1]
    assert list(dataset.splits) == ["train", "train", "val", "val"]
    assert list(dataset.image_ids) == [r[0] for r in rows]
    assert list(dataset.paths) == [str(tmp_path / r[-1]) for r in rows]
    assert dataset.summary() == {"images": 4, "benign": 2, "malignant": 2, "prevalence": 0.5}


def test_class_folders_without_split_folders(tmp_path):
    write_class_folders(tmp_path, per_class=3, suffix=".png")
    dataset = data.load_dataset(tmp_path)
    assert len(dataset) == 6
    assert list(dataset.labels) == [0, 0, 0, 1, 1, 1]
    assert set(dataset.splits) == {""}
    assert all("/benign/" in p for p in dataset.paths[:3])
    assert all("/malignant/" in p for p in dataset.paths[3:])


def test_class_folders_below_train_val_test(tmp_path):
    write_class_folders(tmp_path, per_class=2, splits=("train", "val", "test"))
    dataset = data.load_dataset(tmp_path)
    assert len(dataset) == 12
    for split in ("train", "val", "test"):
        part = dataset.select_split(split)
        assert list(part.labels) == [0, 0, 1, 1]
        assert all(f"/{split}/" in p for p in part.paths)
    assert len(dataset.select_split("all")) == 12


def test_class_folders_ignore_files_that_are_not_images(tmp_path):
    write_class_folders(tmp_path, per_class=2)
    (tmp_path / "benign" / "notes.txt").write_text("not an image")
    assert len(data.load_dataset(tmp_path)) == 4


def test_csv_manifest_with_isic_label_names(tmp_path):
    names = ["a.jpg", "b.jpg", "c.png", "d.jpg"]
    for name in names:
        write_image(tmp_path / "images" / name)
    manifest = write_csv(
        tmp_path / "manifest.csv",
        ["filepath", "label"],
        [
            ("images/a.jpg", "nevus"),
            ("images/b.jpg", "seborrheic_keratosis"),
            ("images/c.png", "melanoma"),
            ("images/d.jpg", "Melanoma"),
        ],
    )

    dataset = data.load_dataset(tmp_path, manifest=manifest)

    assert list(dataset.labels) == [0, 0, 1, 1]
    assert list(dataset.paths) == [str(tmp_path / "images" / n) for n in names]
    assert set(dataset.splits) == {""}


def test_csv_manifest_with_custom_label_map_and_absolute_paths(tmp_path):
    a = write_image(tmp_path / "x" / "a.jpg")
    b = write_image(tmp_path / "x" / "b.jpg")
    manifest = write_csv(
        tmp_path / "m.csv", ["filepath", "label", "split"], [(str(a), "NV", "train"), (str(b), "mel", "test")]
    )

    dataset = data.load_dataset(tmp_path, manifest=manifest, label_map={"nv": "benign", "MEL": "malignant"})

    assert list(dataset.labels) == [0, 1]
    assert list(dataset.paths) == [str(a), str(b)]
    assert list(dataset.splits) == ["train", "test"]


# ---------------------------------------------------------------- errors


def test_missing_folder_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="data folder not found: .*nowhere"):
        data.load_dataset(tmp_path / "nowhere")


def test_folder_without_images_is_refused(tmp_path):
    (tmp_path / "benign").mkdir()
    (tmp_path / "malignant").mkdir()
    with pytest.raises(DatasetError, match="no images found in") as error:
        data.load_dataset(tmp_path)
    assert "benign" in str(error.value) and "labels.csv" in str(error.value)


def test_single_class_is_refused(tmp_path):
    for i in range(3):
        write_image(tmp_path / "benign" / f"{i}.jpg")
    with pytest.raises(DatasetError, match="holds only 'benign' images: both classes are needed"):
        data.load_dataset(tmp_path)


def test_corrupt_image_is_named_when_decoded(tmp_path):
    corrupt = tmp_path / "benign" / "broken.jpg"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    with pytest.raises(DatasetError, match="cannot read image") as error:
        data.load_image(corrupt, 32)
    assert str(corrupt) in str(error.value)

    good = write_image(tmp_path / "good.png")
    with pytest.raises(DatasetError) as error:
        data.load_images([good, corrupt], 32)
    assert str(corrupt) in str(error.value)


def test_truncated_image_is_refused(tmp_path):
    path = write_image(tmp_path / "whole.jpg", size=(64, 64))
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DatasetError, match="truncated.jpg"):
        data.load_image(truncated, 32)


def test_label_outside_the_mapping_names_line_and_label(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write_image(tmp_path / name)
    manifest = write_csv(
        tmp_path / "m.csv",
        ["filepath", "label"],
        [("a.jpg", "nevus"), ("b.jpg", "melanoma"), ("c.jpg", "basal_cell")],
    )
    with pytest.raises(DatasetError, match=r"line 4: label 'basal_cell' is not in the label mapping"):
        data.load_dataset(tmp_path, manifest=manifest)


def test_label_map_to_an_unknown_class_is_refused(tmp_path):
    write_image(tmp_path / "a.jpg")
    manifest = write_csv(tmp_path / "m.csv", ["filepath", "label"], [("a.jpg", "x")])
    with pytest.raises(DatasetError, match="sends 'x' to 'cancer'"):
        data.read_csv_manifest(manifest, label_map={"x": "cancer"})


def test_listed_file_that_does_not_exist_is_refused(tmp_path):
    write_image(tmp_path / "a.jpg")
    manifest = write_csv(
        tmp_path / "m.csv", ["filepath", "label"], [("a.jpg", "nevus"), ("gone.jpg", "melanoma")]
    )
    with pytest.raises(DatasetError, match="image listed but not found: .*gone.jpg"):
        data.load_dataset(tmp_path, manifest=manifest)


def test_manifest_without_label_column_is_refused(tmp_path):
    write_image(tmp_path / "a.jpg")
    manifest = write_csv(tmp_path / "m.csv", ["filepath", "diagnosis"], [("a.jpg", "nevus")])
    with pytest.raises(DatasetError, match="needs a 'label' column; found \\['filepath', 'diagnosis'\\]"):
        data.load_dataset(tmp_path, manifest=manifest)


def test_missing_or_empty_manifest_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="manifest not found"):
        data.load_dataset(tmp_path, manifest=tmp_path / "absent.csv")
    empty = write_csv(tmp_path / "empty.csv", ["filepath", "label"], [])
    with pytest.raises(DatasetError, match="has no rows"):
        data.load_dataset(tmp_path, manifest=empty)


def test_selecting_an_absent_split_lists_the_present_ones(tmp_path):
    write_class_folders(tmp_path, per_class=1, splits=("train", "val"))
    with pytest.raises(DatasetError, match=r"no images in split 'test' \(splits present: train, val\)"):
        data.load_dataset(tmp_path).select_split("test")


# ---------------------------------------------------------------- decoding


def test_training_decodes_like_the_app(tmp_path):
    """One decoder: an RGBA PNG is composited on the app's grey (not black) and a 16-bit
    image is scaled (not clipped), in training exactly as in an upload."""
    from medal_core.data.intake import TRANSPARENT_FILL, read_upload

    rgba = np.zeros((80, 80, 4), np.uint8)
    rgba[..., 0] = 200
    rgba[20:60, 20:60, 3] = 255  # opaque red square, clear edges
    deep = np.arange(80 * 80, dtype=np.uint16).reshape(80, 80) * 10
    for name, image in (("rgba.png", Image.fromarray(rgba, "RGBA")), ("deep.png", Image.fromarray(deep))):
        path = tmp_path / name
        image.save(path)
        app = data.resize_for_model(np.asarray(read_upload(path.read_bytes()).rgb), 64)
        np.testing.assert_array_equal(data.load_image(path, 64), app)
    corner = data.load_image(tmp_path / "rgba.png", 80)[0, 0]
    assert tuple(corner) == TRANSPARENT_FILL
    assert data.load_image(tmp_path / "deep.png", 80).max() > 200  # 63,990 of 65,535


def test_isic_2017_diagnoses_come_from_its_label_columns(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        write_image(tmp_path / name)
    manifest = write_csv(
        tmp_path / "labels.csv",
        ["path", "label", "melanoma", "seborrheic_keratosis"],
        [("a.jpg", "malignant", "1", "0"), ("b.jpg", "benign", "0", "1"), ("c.jpg", "benign", "0", "0")],
    )
    dataset = data.read_csv_manifest(manifest)
    assert list(dataset.diagnoses) == ["melanoma", "seborrheic keratosis", "nevus"]


def test_load_image_resizes_to_rgb_uint8(tmp_path):
    grey = tmp_path / "grey.png"
    from PIL import Image

    Image.new("L", (50, 20), 128).save(grey)
    image = data.load_image(grey, 16)
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    assert np.all(image == 128)


def test_load_image_applies_exif_orientation(tmp_path):
    from PIL import Image

    pixels = np.zeros((10, 30, 3), np.uint8)  # wide image, left third white
    pixels[:, :10] = 255
    image = Image.fromarray(pixels)
    exif = image.getexif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    path = tmp_path / "rotated.jpg"
    image.save(path, exif=exif, quality=100)

    loaded = data.load_image(path, 30)
    # Displayed upright the image is tall, its white band on top.
    assert loaded[:8].mean() > 200 and loaded[-8:].mean() < 50
