"""Privacy, end to end in a real browser: an uploaded image is never written to disk,
never logged, and the page talks to no one but this server.

One streamlit server and one headless Chromium go through the whole flow (Triage:
upload, result, case report download; Batch triage: two images, CSV download). Each
uploaded PNG carries a unique marker (a tEXt chunk with a random uuid, placed right after
the header so that the file's first bytes are unique too) and a unique file name. Then:

(a) disk: the server runs with a TMPDIR and a HOME of its own (fresh folders). The files
    (path, size, mtime) under the repository and the whole system temp directory (which
    holds both) are compared before and after. Every new or changed file in the
    repository, the server's TMPDIR or its HOME must be on the list of expected ones
    (`EXPECTED`, each with its reason); the server's TMPDIR may hold nothing but the
    code TensorFlow's AutoGraph generates while the server runs, and must be empty once
    it has stopped. Other processes on a busy machine write to the system temp
    directory at any time, so files there are not held to the list, but no new or
    changed file anywhere, expected or not, may contain a marker (raw, hex or base64). The disk is
    surveyed twice: with the browser still open (Chromium deletes its profile when it
    closes) and after the browser and server have stopped. Only the browser's download folder is
    exempt: the downloads are the point of the flow (and hold no marker either, as
    asserted; they are deleted afterwards).
(b) logs: the server's stdout and stderr hold no marker, no hex or base64 of a file's
    first bytes and no upload file name;
(c) network: every request of the page (and every WebSocket) went to the server's own
    origin, or was data:, blob: or about:.

Concurrent writers in the repository that have nothing to do with the app can be added
to the expected list with MEDAL_PRIVACY_IGNORE (glob patterns relative to the
repository, separated by os.pathsep); they are still searched for the markers.
"""

from __future__ import annotations

import base64
import csv
import fnmatch
import io
import os
import re
import shutil
import tempfile
import uuid
from pathlib import Path

import pytest
from app_helpers import synthetic_lesion
from browser_support import (
    ROOT,
    UPLOAD_INPUT,
    VIEWPORT,
    ServerError,
    StreamlitServer,
    chromium_missing,
    launch_options,
    open_page,
    settle,
)

pytestmark = pytest.mark.browser

if chromium_missing():
    pytest.skip(chromium_missing(), allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")

SYSTEM_TMP = Path(tempfile.gettempdir()).resolve()
TIMEOUT_MS = 60_000

# New or changed files that are fine, relative to the repository ("repo:"), the server's
# TMPDIR ("server_tmp:") or its HOME ("server_home:"), as fnmatch patterns (`*` also
# matches "/"). All are still searched for the markers.
EXPECTED = {
    "repo:*__pycache__/*": "Python byte code written on import",
    "repo:*.pyc": "Python byte code written on import",
    "repo:.pytest_cache/*": "pytest's own cache",
    "repo:.git/*": "version control metadata (not written by the app)",
    "repo:logs/*": "training logs of a concurrent `medal_core.stages.train` run (git-ignored)",
    "repo:models/*/checkpoints/*": "checkpoints of a concurrent training run (git-ignored)",
    "server_tmp:__autograph_generated_file*.py": "TensorFlow AutoGraph writes the code it "
    "generates for the model's tf.functions "
    "(no data; removed when the server stops)",
    "server_home:.keras/keras.json": "Keras writes its default settings on first import",
}


def _extra_expected() -> dict[str, str]:
    patterns = [p for p in os.environ.get("MEDAL_PRIVACY_IGNORE", "").split(os.pathsep) if p]
    return {f"repo:{p}": "MEDAL_PRIVACY_IGNORE" for p in patterns}


# ---------------------------------------------------------------- marked uploads


def marked_png(seed: int, marker: str, size: int = 320) -> bytes:
    """A synthetic lesion as PNG with `marker` in a tEXt chunk right after IHDR."""
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Comment", marker)
    buffer = io.BytesIO()
    Image.fromarray(synthetic_lesion(seed, size)).save(buffer, format="PNG", pnginfo=info)
    data = buffer.getvalue()
    assert marker.encode() in data[:120], "the marker must be among the file's first bytes"
    return data


def encodings(data: bytes) -> list[bytes]:
    """`data` raw, as hex (both cases) and as base64 (standard and URL-safe) at each of
    the three alignments it can have inside a longer base64 text."""
    found = [data, data.hex().encode(), data.hex().upper().encode()]
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + data)
        core = encoded[4 if shift else 0 : len(encoded) - 4]
        found += [core, core.replace(b"+", b"-").replace(b"/", b"_")]
    return found


def prefix_encodings(data: bytes, length: int = 64) -> list[bytes]:
    """The file's first bytes as base64 (as in a data: URL) and hex."""
    head = data[:length]
    return [base64.b64encode(head)[:-4], head.hex().encode(), head.hex().upper().encode()]


# ---------------------------------------------------------------- disk snapshots


def snapshot(roots: list[Path], skip: list[Path]) -> dict[str, tuple[int, int]]:
    """path → (size, mtime_ns) of every regular file under `roots`, minus `skip`."""
    skipped = {str(p) for p in skip}
    files: dict[str, tuple[int, int]] = {}
    for root in roots:
        for folder, subfolders, names in os.walk(root, onerror=lambda error: None):
            subfolders[:] = [d for d in subfolders if os.path.join(folder, d) not in skipped]
            for name in names:
                path = os.path.join(folder, name)
                try:
                    stat = os.lstat(path)
                except OSError:
                    continue
                if os.path.isfile(path) and not os.path.islink(path):
                    files[path] = (stat.st_size, stat.st_mtime_ns)
    return files


def changed(before: dict, after: dict) -> list[str]:
    return sorted(p for p, meta in after.items() if before.get(p) != meta)


OTHER_PROCESSES = "elsewhere in the system temp directory (searched for markers only)"


def expectation(
    path: str, browser_dir: Path, server_tmp: Path, server_home: Path, patterns: dict[str, str]
) -> str | None:
    """Why a new or changed file is fine, or None."""
    if path.startswith(str(browser_dir) + os.sep):
        return "the headless browser's own profile and temporary files"
    for area, root in (("server_tmp", server_tmp), ("server_home", server_home), ("repo", ROOT)):
        if path.startswith(str(root) + os.sep):
            relative = os.path.relpath(path, root)
            for pattern, reason in patterns.items():
                if pattern.startswith(area + ":") and fnmatch.fnmatch(relative, pattern[len(area) + 1 :]):
                    return reason
            return None
    return OTHER_PROCESSES


def files_containing(paths, needles: list[bytes]) -> list[str]:
    hits = []
    for path in paths:
        try:
            content = Path(path).read_bytes()
        except OSError:
            continue
        if any(needle in content for needle in needles):
            hits.append(path)
    return hits


# ---------------------------------------------------------------- the test


def test_uploads_stay_in_memory_and_on_this_server(tmp_path, monkeypatch):
    token = uuid.uuid4().hex[:10]
    uploads = []  # (file name, bytes, marker)
    for i, seed in enumerate((11, 12, 13)):
        marker = f"MEDAL-PRIVACY-{uuid.uuid4()}"
        uploads.append((f"privacy_{token}_{i}.png", marked_png(seed, marker), marker))
    needles = [n for _, _, marker in uploads for n in encodings(marker.encode())]
    log_needles = needles + [n for _, data, _ in uploads for n in prefix_encodings(data)]
    names = [name for name, _, _ in uploads]

    models_dir = _models_dir(tmp_path)
    server_tmp = tmp_path / "server_tmp"  # the server's TMPDIR
    server_home = tmp_path / "server_home"  # the server's HOME
    downloads = tmp_path / "downloads"  # the browser's downloads (exempt)
    for folder in (server_tmp, server_home, downloads):
        folder.mkdir()
    roots = [ROOT, SYSTEM_TMP]
    if not tmp_path.resolve().is_relative_to(SYSTEM_TMP):  # pytest --basetemp elsewhere
        roots.append(tmp_path)
    before = snapshot(roots, skip=[downloads])
    # Playwright's TMPDIR (Chromium's profile and sockets); short, as Chromium refuses
    # socket paths over 107 characters.
    browser_dir = Path(tempfile.mkdtemp(prefix="medal_pw_", dir=SYSTEM_TMP))
    server = StreamlitServer(
        models_dir, env={"TMPDIR": server_tmp, "TEMP": None, "TMP": None, "HOME": server_home}
    )
    requests: list[str] = []
    sockets: list[str] = []
    playwright = None
    try:
        try:
            server.start()
        except ServerError as error:
            pytest.fail(str(error))
        monkeypatch.setenv("TMPDIR", str(browser_dir))  # for Playwright's driver only
        playwright = sync_api.sync_playwright().start()
        monkeypatch.undo()
        browser = playwright.chromium.launch(**launch_options(downloads_path=str(downloads)))
        context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
        context.on("request", lambda request: requests.append(request.url))
        page = context.new_page()
        page.on("websocket", lambda socket: sockets.append(socket.url))
        page.set_default_timeout(TIMEOUT_MS)
        page.goto(server.url)
        _triage_and_batch(page, uploads)
        # Chromium deletes its profile when it closes: survey the disk while it is open.
        during = changed(before, snapshot(roots, skip=[downloads]))
        hits = files_containing(during, needles)
        browser.close()
        playwright.stop()
        playwright = None
        server.stop()
        after = changed(before, snapshot(roots, skip=[downloads]))
        hits += files_containing(after, needles)
        # (a) disk
        _check_disk(
            sorted(set(during) | set(after)),
            sorted(set(hits)),
            browser_dir,
            server_tmp,
            server_home,
            downloads,
            needles,
        )
    finally:
        if playwright is not None:
            playwright.stop()
        server.stop()
        shutil.rmtree(browser_dir, ignore_errors=True)
        shutil.rmtree(downloads, ignore_errors=True)

    # (b) logs: no image bytes, no file names
    output = server.output()
    assert [n for n in log_needles if n in output] == []
    assert [n for n in names if n.encode() in output] == []

    # (c) network: only this server
    external = [url for url in requests if not url.startswith((server.url + "/", "data:", "blob:", "about:"))]
    assert requests and external == [], external
    assert sockets and all(url.startswith(f"ws://127.0.0.1:{server.port}/") for url in sockets), sockets


def _triage_and_batch(page, uploads) -> None:
    """Triage: upload, result, case report; Batch triage: two uploads, the CSV."""
    name, data, _ = uploads[0]
    page.locator(UPLOAD_INPUT).first.set_input_files(
        files=[{"name": name, "mimeType": "image/png", "buffer": data}]
    )
    report_button = page.get_by_role("button", name="Download case report (HTML)")
    report_button.wait_for()
    settle(page)
    assert (
        page.get_by_text(
            re.compile(
                r"Probability of melanoma|Not recognised as a "
                r"dermoscopic"
            )
        ).count()
        >= 1
    )
    with page.expect_download() as report_info:
        report_button.click()
    report = Path(report_info.value.path()).read_text()
    assert "<html" in report.lower() and name in report

    open_page(page, "Batch triage")
    page.locator(UPLOAD_INPUT).first.set_input_files(
        files=[{"name": n, "mimeType": "image/png", "buffer": d} for n, d, _ in uploads[1:]]
    )
    csv_button = page.get_by_role("button", name="Download results (CSV)")
    csv_button.wait_for()
    settle(page)
    with page.expect_download() as csv_info:
        csv_button.click()
    rows = list(csv.reader(io.StringIO(Path(csv_info.value.path()).read_text())))
    assert sorted(r[0] for r in rows[1:]) == sorted(n for n, _, _ in uploads[1:])


def _check_disk(
    written: list[str],
    hits: list[str],
    browser_dir: Path,
    server_tmp: Path,
    server_home: Path,
    downloads: Path,
    needles: list[bytes],
) -> None:
    """(a): nothing unexpected written, the server's TMPDIR empty, no marker anywhere
    (`hits`: the written files that hold one)."""
    patterns = {**EXPECTED, **_extra_expected()}
    reasons = {p: expectation(p, browser_dir, server_tmp, server_home, patterns) for p in written}
    print(f"\n{len(written)} files new or changed during the flow:")
    for reason in sorted(set(map(str, reasons.values()))):
        print(f"  {sum(str(r) == reason for r in reasons.values()):5d}  {reason}")
    assert hits == [], f"an uploaded file's marker is on disk: {hits}"
    unexpected = [p for p, reason in reasons.items() if reason is None]
    assert unexpected == [], f"files written during the flow that nobody expects: {unexpected}"
    assert sorted(server_tmp.rglob("*")) == [], "the server left files in its TMPDIR"
    downloaded = [p for p in downloads.rglob("*") if p.is_file()]
    assert len(downloaded) == 2, downloaded  # the report and the CSV
    assert files_containing(downloaded, needles) == []  # they hold re-encoded images only


def _models_dir(tmp_path: Path) -> Path:
    """The committed `models/` when it has a usable bundle, else tiny bundles."""
    from app_helpers import make_models_dir

    from medal_views.catalog import scan

    committed = ROOT / "models"
    if not scan(committed).empty:
        return committed
    return make_models_dir(tmp_path / "models", names=("tiny",))
