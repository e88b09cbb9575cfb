"""Which image plays which role: training, selection, calibration or report.

Every figure a user sees is only honest if no image, lesion or duplicate plays two roles:

* ``train``: the weights are fitted on it;
* ``selection``: it chooses the checkpoint (early stopping) and any model choice;
* ``calibration``: it fits the temperature and sets the threshold and the screen's limits;
* ``report``: it chose nothing; the headline figures come from it.

A *recipe* (JSON) combines several datasets and says, per dataset, which part goes where::

    {"seed": 42,
     "datasets": [
       {"name": "isic2017", "exclude": "test_duplicates.csv",
        "roles": {"split=val": "selection",
                  "*": {"train": 0.7, "selection": 0.1, "calibration": 0.1, "report": 0.1}}},
       {"name": "ham10000", "train_weight": 0.35,
        "roles": {"fold=0": "calibration", "*": "train"}}]}

`name` is a folder below the data root given on the command line (code never assumes
where the data lives). Each image takes the first rule whose selector matches it
(`split=...`, `fold=...`, or `*`); a rule sends it to one role, or splits its images
between roles by fractions, seeded, stratified by class and grouped, so that all images
of one lesion stay together. Lesions are grouped by `lesion_id` where a dataset has one
and by file content (sha256) everywhere, across datasets too: byte-identical files are
one lesion. A group whose images matched different rules goes, whole, to the most
held-out role among them (report, then calibration, selection, train). `exclude` lists
image ids (a CSV with an `image_id` column) to leave out of every role, such as the
ISIC 2017 images that show a lesion of the held-out test split.

`train_weight` is the chance that a training image of that dataset is drawn in an epoch:
sources that differ from the images the app is meant for count for less without being
dropped.
"""

from __future__ import annotations

import csv
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medal_core.data.datasets import Dataset, DatasetError, load_dataset

ROLES = ("train", "selection", "calibration", "report")
EXCLUDED = ""
# When one lesion matched rules of different roles, it goes whole to the first of these.
_HOLD_OUT_ORDER = ("report", "calibration", "selection", "train")


@dataclass(frozen=True)
class SourceRule:
    """One dataset of a recipe: where it is and how its images are shared out."""

    name: str
    roles: dict  # selector -> role, or {role: fraction}
    train_weight: float = 1.0  # chance a training image is drawn in an epoch
    exclude: str | None = None  # CSV of image ids (relative to the dataset folder)


@dataclass(frozen=True)
class Recipe:
    sources: tuple[SourceRule, ...]
    seed: int = 42
    description: str = ""

    def as_dict(self) -> dict:
        return {
            "seed": self.seed,
            "description": self.description,
            "datasets": [vars(rule) for rule in self.sources],
        }


@dataclass(frozen=True)
class RoleAssignment:
    """The combined dataset, each image's role ("" = excluded) and training weight."""

    dataset: Dataset
    roles: np.ndarray  # (n,) one of ROLES or EXCLUDED
    train_weights: np.ndarray  # (n,) float, the source's train_weight
    hashes: np.ndarray  # (n,) sha256 hex of each file
    groups: np.ndarray  # (n,) int, lesion group
    recipe: Recipe = field(repr=False)

    def role(self, name: str) -> Dataset:
        if name not in ROLES:
            raise ValueError(f"unknown role '{name}'; roles are {ROLES}")
        return self.dataset.subset(self.roles == name)

    def weights_of(self, name: str) -> np.ndarray:
        return self.train_weights[self.roles == name]

    def summary(self) -> dict:
        """Per role: counts, per-source counts and the sha256 of its sorted image ids
        (source/image_id), so that a manifest records exactly which images were used."""
        return {name: role_summary(self.dataset.subset(self.roles == name)) for name in ROLES}


# ---------------------------------------------------------------- recipes


def default_recipe(names: list[str], seed: int = 42) -> Recipe:
    """What `--data A --data B` means: each dataset's official `val` split selects; the
    rest is split 70/10/10/10 into train/selection/calibration/report, by lesion."""
    rule = {
        "split=val": "selection",
        "*": {"train": 0.7, "selection": 0.1, "calibration": 0.1, "report": 0.1},
    }
    return Recipe(
        tuple(SourceRule(name, dict(rule)) for name in names),
        seed,
        "each dataset: official val -> selection; the rest 70/10/10/10",
    )


def read_recipe(path: str | Path) -> Recipe:
    """Read and check a JSON recipe (see the module docstring)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"recipe not found: {path}") from None
    except json.JSONDecodeError as error:
        raise DatasetError(f"recipe {path} is not valid JSON: {error}") from None
    if not isinstance(raw, dict) or not isinstance(raw.get("datasets"), list) or not raw["datasets"]:
        raise DatasetError(f"recipe {path} needs a non-empty 'datasets' list")
    sources = []
    for index, entry in enumerate(raw["datasets"]):
        where = f"recipe {path}, dataset {index + 1}"
        if not isinstance(entry, dict) or "name" not in entry or "roles" not in entry:
            raise DatasetError(f"{where}: needs 'name' and 'roles'")
        unknown = set(entry) - {"name", "roles", "train_weight", "exclude"}
        if unknown:
            raise DatasetError(f"{where}: unknown keys {sorted(unknown)}")
        rule = SourceRule(
            entry["name"], entry["roles"], float(entry.get("train_weight", 1.0)), entry.get("exclude")
        )
        _check_rule(rule, where)
        sources.append(rule)
    names = [rule.name for rule in sources]
    if len(set(names)) != len(names):
        raise DatasetError(f"recipe {path}: a dataset is listed twice ({names})")
    return Recipe(tuple(sources), int(raw.get("seed", 42)), str(raw.get("description", "")))


def _check_rule(rule: SourceRule, where: str) -> None:
    if not isinstance(rule.roles, dict) or not rule.roles:
        raise DatasetError(f"{where}: 'roles' must map selectors to roles")
    for selector, target in rule.roles.items():
        if selector != "*" and not selector.startswith(("split=", "fold=")):
            raise DatasetError(f"{where}: selector '{selector}' is not '*', 'split=NAME' or 'fold=N'")
        shares = {target: 1.0} if isinstance(target, str) else target
        if not isinstance(shares, dict) or set(shares) - set(ROLES):
            raise DatasetError(f"{where}: '{selector}' must name roles among {ROLES}")
        if (
            any(not 0 <= float(v) <= 1 for v in shares.values())
            or abs(sum(float(v) for v in shares.values()) - 1) > 1e-6
        ):
            raise DatasetError(f"{where}: the fractions of '{selector}' must add up to 1")
    if not 0 < rule.train_weight <= 1:
        raise DatasetError(f"{where}: train_weight must be in (0, 1]")


def recipe_from_dict(raw: dict) -> Recipe:
    """The `Recipe` that `Recipe.as_dict` wrote (e.g. into a bundle's manifest)."""
    return Recipe(
        tuple(SourceRule(**entry) for entry in raw["datasets"]), int(raw["seed"]), raw.get("description", "")
    )


def differing_roles(recorded: dict, other: dict) -> list[str]:
    """The roles whose images differ between two role summaries (`RoleAssignment.summary()`
    or a manifest's `data.roles`), compared by the sha256 of their sorted image ids."""
    return [role for role in ROLES if recorded[role]["ids_sha256"] != other[role]["ids_sha256"]]


def bundle_roles(manifest: dict, data_root: str | Path) -> RoleAssignment:
    """A bundle's roles rebuilt from the recipe in its manifest, checked image for image
    against the ids it recorded (DatasetError if the data under `data_root` differ)."""
    if "recipe" not in manifest.get("data", {}):
        raise DatasetError(
            f"bundle '{manifest.get('name')}' records no recipe: it predates "
            "data roles; retrain it with `python -m medal_core train`"
        )
    assignment = assign_roles(recipe_from_dict(manifest["data"]["recipe"]), data_root)
    recorded, rebuilt = manifest["data"]["roles"], assignment.summary()
    differ = differing_roles(recorded, rebuilt)
    if differ:
        role = differ[0]
        raise DatasetError(
            f"the {role} images under {data_root} are not the ones bundle "
            f"'{manifest.get('name')}' recorded ({rebuilt[role]['images']} images, "
            f"{recorded[role]['images']} recorded): another copy or version of the data?"
        )
    return assignment


# ---------------------------------------------------------------- assignment


def assign_roles(recipe: Recipe, data_root: str | Path) -> RoleAssignment:
    """Load every dataset of `recipe` below `data_root` and give each image its role."""
    data_root = Path(data_root)
    parts, role_parts, weight_parts = [], [], []
    for rule in recipe.sources:
        dataset = load_dataset(data_root / rule.name)
        excluded = read_excluded_ids(data_root / rule.name / rule.exclude) if rule.exclude else set()
        keep = ~np.isin(dataset.image_ids, sorted(excluded))
        parts.append(dataset)
        role_parts.append(np.where(keep, "?", EXCLUDED).astype(object))
        weight_parts.append(np.full(len(dataset), rule.train_weight))
    combined = concatenate(parts)
    roles = np.concatenate(role_parts)
    hashes = np.array([content_sha256(p) for p in combined.paths])
    groups = lesion_groups(combined, hashes)
    rng = np.random.default_rng(recipe.seed)
    offset = 0
    for rule, part in zip(recipe.sources, parts):
        span = slice(offset, offset + len(part))
        roles[span] = _apply_rule(rule, part, roles[span], groups[span], rng)
        offset += len(part)
    roles = _keep_groups_whole(roles, groups)
    assignment = RoleAssignment(combined, roles, np.concatenate(weight_parts), hashes, groups, recipe)
    check_roles_disjoint(assignment)
    return assignment


def _apply_rule(
    rule: SourceRule, dataset: Dataset, roles: np.ndarray, groups: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    roles = roles.copy()
    pending = roles == "?"
    for selector, target in rule.roles.items():
        if selector == "*":
            matched = pending.copy()
        else:
            key, value = selector.split("=", 1)
            column = dataset.splits if key == "split" else dataset.folds
            matched = pending & (column.astype(str) == value)
        if isinstance(target, str):
            roles[matched] = target
        else:
            roles[matched] = grouped_split(
                dataset.labels[matched], groups[matched], {k: float(v) for k, v in target.items()}, rng
            )
        pending &= ~matched
    roles[pending] = EXCLUDED  # matched no rule: used for nothing
    return roles


def grouped_split(
    labels: np.ndarray, groups: np.ndarray, fractions: dict[str, float], rng: np.random.Generator
) -> np.ndarray:
    """Share images between roles by `fractions` of the images, whole groups at a time,
    stratified by class (a group counts as malignant if any of its images is).

    labels, groups: (n,). Returns (n,) role names.
    """
    roles = np.empty(len(labels), dtype=object)
    unique, inverse = np.unique(groups, return_inverse=True)
    group_label = np.zeros(len(unique), dtype=int)
    np.maximum.at(group_label, inverse, labels)
    group_size = np.bincount(inverse, minlength=len(unique))
    names = list(fractions)
    cumulative = np.cumsum([fractions[n] for n in names])
    for label in (0, 1):
        members = rng.permutation(np.flatnonzero(group_label == label))
        filled = np.cumsum(group_size[members]) - group_size[members] / 2  # group midpoints
        share = filled / max(group_size[members].sum(), 1)
        which = np.searchsorted(cumulative, share, side="right").clip(0, len(names) - 1)
        for group, index in zip(members, which):
            roles[inverse == group] = names[index]
    return roles


def _keep_groups_whole(roles: np.ndarray, groups: np.ndarray) -> np.ndarray:
    """A group whose images got different roles goes whole to the most held-out one;
    an excluded image excludes its whole group."""
    roles = roles.copy()
    for group in np.unique(groups):
        members = groups == group
        present = set(roles[members])
        if len(present) == 1:
            continue
        if EXCLUDED in present:
            roles[members] = EXCLUDED
        else:
            roles[members] = next(r for r in _HOLD_OUT_ORDER if r in present)
    return roles


def check_roles_disjoint(assignment: RoleAssignment) -> None:
    """Raise if a content hash, a lesion group or a (source, lesion_id) sits in two roles."""
    used = assignment.roles != EXCLUDED
    keys = {
        "file content (sha256)": assignment.hashes,
        "lesion group": assignment.groups.astype(str),
        "lesion_id": np.array(
            [
                f"{s}/{lid}" if lid else f"{s}/#{i}"
                for i, (s, lid) in enumerate(zip(assignment.dataset.sources, assignment.dataset.lesion_ids))
            ]
        ),
    }
    for what, values in keys.items():
        seen: dict[str, str] = {}
        for value, role in zip(values[used], assignment.roles[used]):
            if seen.setdefault(value, role) != role:
                raise DatasetError(f"one {what} ({value}) is in two roles: {seen[value]} and {role}")


# ---------------------------------------------------------------- helpers


def concatenate(datasets: list[Dataset]) -> Dataset:
    """One dataset of all images of `datasets`, in order, metadata kept."""
    fields = ("paths", "labels", "splits", "sources", "diagnoses", "lesion_ids", "folds")
    return Dataset(*(np.concatenate([getattr(d, f) for d in datasets]) for f in fields))


def content_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def lesion_groups(dataset: Dataset, hashes: np.ndarray) -> np.ndarray:
    """(n,) int group ids: images with the same (source, lesion_id) or the same file
    content are one group (union-find over both keys)."""
    parent = list(range(len(dataset)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    first: dict[str, int] = {}
    for i, (source, lesion, digest) in enumerate(zip(dataset.sources, dataset.lesion_ids, hashes)):
        for key in ([f"lesion:{source}/{lesion}"] if lesion else []) + [f"sha:{digest}"]:
            if key in first:
                parent[find(i)] = find(first[key])
            else:
                first[key] = i
    return np.array([find(i) for i in range(len(dataset))])


def read_excluded_ids(path: Path) -> set[str]:
    if not path.is_file():
        raise DatasetError(f"exclusion list not found: {path}")
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if rows and "image_id" not in rows[0]:
        raise DatasetError(f"exclusion list {path} needs an 'image_id' column")
    return {row["image_id"].strip() for row in rows}


def role_summary(dataset: Dataset) -> dict:
    """Counts, per-source counts and the sha256 of the sorted 'source/image_id' list."""
    ids = sorted(f"{s}/{i}" for s, i in zip(dataset.sources, dataset.image_ids))
    per_source = {}
    for source in sorted(set(dataset.sources)):
        part = dataset.subset(dataset.sources == source)
        per_source[source] = {"images": len(part), "malignant": int(part.labels.sum())}
    return {
        **dataset.summary(),
        "sources": per_source,
        "ids_sha256": hashlib.sha256("\n".join(ids).encode()).hexdigest(),
    }
