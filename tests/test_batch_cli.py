"""`python -m medal_core batch`: inputs from a folder or a manifest, and one real run on
Ray Data (a local cluster, started and stopped by the command) over a small folder."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from app_helpers import make_bundle, png, synthetic_lesion

from medal_core.serving.batch import list_inputs, parse_args, read_file
from medal_core.serving.table import CSV_COLUMNS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("archive")
    (folder / "clinic_b").mkdir()
    for i, name in enumerate(["a.png", "clinic_b/c.png", "b.png"]):
        (folder / name).write_bytes(png(synthetic_lesion(20 + i, 200)))
    (folder / "clinic_b" / "notes.png").write_bytes(b"not an image at all")
    (folder / "readme.txt").write_text("skipped: not an image file name")
    return folder


def test_a_folder_lists_its_image_files_sorted_and_recursively(image_folder):
    names = [name for name, _ in list_inputs(image_folder)]
    assert names == ["a.png", "b.png", "clinic_b/c.png", "clinic_b/notes.png"]


def test_a_manifest_lists_its_paths_in_order_relative_to_itself(tmp_path, image_folder):
    manifest = tmp_path / "manifest.csv"
    manifest.write_text(f"path,patient\n{image_folder / 'b.png'}, 1\nmissing.png,2\n")
    rows = list(list_inputs(manifest))
    assert rows[0] == (str(image_folder / "b.png"), str(image_folder / "b.png"))
    assert rows[1] == ("missing.png", str((tmp_path / "missing.png").resolve()))
    assert "could not be read" in read_file(rows[1][1])


def test_a_manifest_without_a_path_column_is_refused_by_name(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_text("file\na.png\n")
    with pytest.raises(ValueError, match="no 'path' column"):
        list(list_inputs(manifest))


def test_bad_arguments_are_refused_before_ray_starts(tmp_path, image_folder, capsys):
    for argv in (
        ["--input", str(image_folder), "--out", "o.csv", "--bundle", str(tmp_path)],
        ["--input", str(tmp_path / "nope"), "--out", "o.csv", "--bundle", "models/mobilenet"],
        ["--input", str(image_folder), "--out", "o.csv", "--workers", "0"],
        ["--input", str(image_folder), "--out", "o.csv", "--threshold", "2"],
    ):
        with pytest.raises(SystemExit):
            parse_args(argv)
    assert "error" in capsys.readouterr().err


def test_the_batch_command_scores_a_folder_on_ray_data(tmp_path, image_folder):
    (tmp_path / "models").mkdir()
    bundle = make_bundle(tmp_path / "models" / "alpha")
    out = tmp_path / "results.csv"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "medal_core",
            "batch",
            "--input",
            str(image_folder),
            "--out",
            str(out),
            "--bundle",
            str(bundle),
            "--workers",
            "1",
            "--batch-size",
            "2",
            "--threshold",
            "0.5",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=420,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    with out.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r["file"] for r in rows] == ["a.png", "b.png", "clinic_b/c.png", "clinic_b/notes.png"]
    scored, refused = rows[:3], rows[3]
    assert all(r["status"] == "ok" and r["threshold"] == "0.5000" and r["model"] == "alpha" for r in scored)
    assert all(r["verdict_code"] in ("refer", "indeterminate", "low", "no_estimate") for r in scored)
    assert refused["status"] == "refused" and "not an image we can read" in refused["error"]
    assert "wrote 4 rows" in done.stderr
