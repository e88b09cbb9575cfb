"""Data roles: recipes, lesion grouping, exclusions, and that no image, lesion or
duplicate plays two roles (on synthetic data, and on the real recipe when the data exist)."""

import csv
import json
import shutil
import zlib
from pathlib import Path

import numpy as np
import pytest
from helpers import write_image

from medal_core.data import roles
from medal_core.data.datasets import DatasetError

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = ROOT.parent / "shared" / "data"


def write_isic_layout(folder: Path, rows: list[dict]) -> Path:
    """An ISIC-layout dataset: `rows` of image_id, label, split[, lesion_id, fold,
    diagnosis, copy_of]; each image distinct unless `copy_of` names one to duplicate."""
    folder.mkdir(parents=True, exist_ok=True)
    written = {}
    for i, row in enumerate(rows):
        path = folder / row["split"] / row["label"] / f"{row['image_id']}.png"
        if row.get("copy_of"):
            path.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(written[row["copy_of"]], path)
        else:
            write_image(path, size=(24, 24), seed=zlib.crc32(row["image_id"].encode()))
        written[row["image_id"]] = path
    columns = ["image_id", "split", "label", "path", "lesion_id", "fold", "diagnosis"]
    with (folder / "labels.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {
                    "image_id": row["image_id"],
                    "split": row["split"],
                    "label": row["label"],
                    "lesion_id": row.get("lesion_id", ""),
                    "fold": row.get("fold", ""),
                    "diagnosis": row.get("diagnosis", ""),
                    "path": f"{row['split']}/{row['label']}/{row['image_id']}.png",
                }
            )
    return folder


@pytest.fixture
def data_root(tmp_path):
    """'alpha': 40 train + 10 val images, one train image byte-identical to a val image,
    two excluded ids. 'beta': 30 images of 10 lesions (3 each) in folds 0-2."""
    alpha = [
        {"image_id": f"A{i:03d}", "split": "train", "label": "malignant" if i % 4 == 0 else "benign"}
        for i in range(40)
    ]
    alpha += [
        {"image_id": f"V{i:03d}", "split": "val", "label": "malignant" if i % 3 == 0 else "benign"}
        for i in range(10)
    ]
    alpha.append({"image_id": "A_COPY", "split": "train", "label": "malignant", "copy_of": "V000"})
    write_isic_layout(tmp_path / "alpha", alpha)
    (tmp_path / "alpha" / "excluded.csv").write_text("image_id,split\nA001,train\nA002,train\n")
    beta = [
        {
            "image_id": f"B{n}{k}",
            "split": "train",
            "lesion_id": f"L{n}",
            "fold": str(n % 3),
            "label": "malignant" if n % 2 else "benign",
            "diagnosis": "mel" if n % 2 else "nv",
        }
        for n in range(10)
        for k in range(3)
    ]
    write_isic_layout(tmp_path / "beta", beta)
    return tmp_path


def recipe_file(folder: Path, content: dict) -> Path:
    path = folder / "recipe.json"
    path.write_text(json.dumps(content))
    return path


RECIPE = {
    "seed": 3,
    "datasets": [
        {
            "name": "alpha",
            "exclude": "excluded.csv",
            "roles": {"split=val": "selection", "*": {"train": 0.5, "calibration": 0.25, "report": 0.25}},
        },
        {
            "name": "beta",
            "train_weight": 0.5,
            "roles": {"fold=0": "calibration", "*": {"train": 0.5, "report": 0.5}},
        },
    ],
}


def test_every_image_gets_one_role_and_no_group_spans_two(data_root):
    assignment = roles.assign_roles(roles.read_recipe(recipe_file(data_root, RECIPE)), data_root)
    ids = dict(zip(assignment.dataset.image_ids, assignment.roles))
    assert ids["A001"] == ids["A002"] == roles.EXCLUDED  # the exclusion list
    # A byte-identical train copy of a val image goes with it, to the most held-out role.
    assert ids["A_COPY"] == ids["V000"] == "selection"
    for role in set(assignment.roles) - {roles.EXCLUDED}:
        assert role in roles.ROLES
    # All three images of a lesion share a role; fold 0 lesions are calibration.
    beta = assignment.dataset.sources == "beta"
    for lesion in set(assignment.dataset.lesion_ids[beta]):
        members = assignment.roles[assignment.dataset.lesion_ids == lesion]
        assert len(set(members)) == 1
    fold0 = beta & (assignment.dataset.folds == "0")
    assert set(assignment.roles[fold0]) == {"calibration"}
    roles.check_roles_disjoint(assignment)  # raises on any shared hash or lesion
    weights = dict(zip(assignment.dataset.sources, assignment.train_weights))
    assert weights == {"alpha": 1.0, "beta": 0.5}


def test_grouped_split_follows_the_fractions_and_the_classes():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 800 + [1] * 200)
    groups = np.repeat(np.arange(500), 2)  # two images a lesion, one label each
    shares = roles.grouped_split(labels, groups, {"train": 0.7, "report": 0.3}, rng)
    for label in (0, 1):
        assert np.mean(shares[labels == label] == "train") == pytest.approx(0.7, abs=0.02)
    for group in range(500):
        assert len(set(shares[groups == group])) == 1


def test_a_duplicate_in_two_roles_is_caught(data_root):
    assignment = roles.assign_roles(roles.read_recipe(recipe_file(data_root, RECIPE)), data_root)
    broken = assignment.roles.copy()
    copy_index = int(np.flatnonzero(assignment.dataset.image_ids == "A_COPY")[0])
    broken[copy_index] = "train"
    with pytest.raises(DatasetError, match=r"file content \(sha256\).*two roles"):
        roles.check_roles_disjoint(
            roles.RoleAssignment(
                assignment.dataset,
                broken,
                assignment.train_weights,
                assignment.hashes,
                assignment.groups,
                assignment.recipe,
            )
        )


def test_the_summary_names_the_exact_images_of_each_role(data_root):
    recipe = roles.read_recipe(recipe_file(data_root, RECIPE))
    first = roles.assign_roles(recipe, data_root).summary()
    again = roles.assign_roles(recipe, data_root).summary()
    assert first == again  # seeded: the same images
    other = roles.assign_roles(roles.Recipe(recipe.sources, seed=4), data_root).summary()
    assert other["train"]["ids_sha256"] != first["train"]["ids_sha256"]
    assert sum(first[r]["images"] for r in roles.ROLES) == 51 + 30 - 2  # minus the excluded


def test_bundle_roles_refuses_data_that_differ_from_the_record(data_root):
    recipe = roles.read_recipe(recipe_file(data_root, RECIPE))
    manifest = {
        "name": "b",
        "data": {"recipe": recipe.as_dict(), "roles": roles.assign_roles(recipe, data_root).summary()},
    }
    assert roles.bundle_roles(manifest, data_root).summary() == manifest["data"]["roles"]
    (data_root / "alpha" / "excluded.csv").write_text("image_id\nA001\n")  # A002 now used
    with pytest.raises(DatasetError, match="not the ones bundle 'b' recorded"):
        roles.bundle_roles(manifest, data_root)


@pytest.mark.parametrize(
    "content, message",
    [
        ({"datasets": []}, "non-empty 'datasets'"),
        ({"datasets": [{"name": "a"}]}, "needs 'name' and 'roles'"),
        ({"datasets": [{"name": "a", "roles": {"size=3": "train"}}]}, "selector 'size=3'"),
        ({"datasets": [{"name": "a", "roles": {"*": "testing"}}]}, "must name roles"),
        ({"datasets": [{"name": "a", "roles": {"*": {"train": 0.5, "report": 0.4}}}]}, "add up to 1"),
        ({"datasets": [{"name": "a", "roles": {"*": "train"}, "train_weight": 0}]}, "train_weight"),
        (
            {"datasets": [{"name": "a", "roles": {"*": "train"}}, {"name": "a", "roles": {"*": "train"}}]},
            "listed twice",
        ),
    ],
)
def test_malformed_recipes_are_refused_with_the_reason(tmp_path, content, message):
    with pytest.raises(DatasetError, match=message):
        roles.read_recipe(recipe_file(tmp_path, content))


@pytest.mark.real_data
def test_the_shipped_recipe_keeps_roles_apart_on_the_real_data():
    if not (SHARED_DATA / "isic2017" / "labels.csv").is_file():
        pytest.skip(f"the datasets are not in {SHARED_DATA}")
    assignment = roles.assign_roles(roles.read_recipe(ROOT / "recipes" / "dermoscopic.json"), SHARED_DATA)
    roles.check_roles_disjoint(assignment)
    used = assignment.roles != roles.EXCLUDED
    # No content hash and no lesion_id in two roles (checked directly, not only by the helper).
    lesion_keys = [
        f"{source}/{lesion}" if lesion else None
        for source, lesion in zip(assignment.dataset.sources, assignment.dataset.lesion_ids)
    ]
    for keys in (assignment.hashes, lesion_keys):
        role_of: dict = {}
        for key, role, use in zip(keys, assignment.roles, used):
            if use and key is not None:
                assert role_of.setdefault(key, role) == role, key
    # The held-out test split's duplicates are used nowhere.
    with (SHARED_DATA / "isic2017" / "test_duplicates.csv").open() as handle:
        duplicates = {row["image_id"] for row in csv.DictReader(handle)}
    isic = assignment.dataset.sources == "isic2017"
    assert len(duplicates) == 32
    assert set(assignment.roles[isic & np.isin(assignment.dataset.image_ids, list(duplicates))]) == {
        roles.EXCLUDED
    }
    ids = dict(zip(assignment.dataset.image_ids[isic], assignment.roles[isic]))
    assert ids["ISIC_0012970"] == ids["ISIC_0012127"]  # byte-identical pair, one role
    assert set(assignment.roles[assignment.dataset.sources == "isic2018_task3_test"]) == {"report"}
