"""The app in a real headless Chromium: upload, result and heatmap, the threshold
explorer, and batch triage with its CSV download.

Starts `streamlit run streamlit_app.py` on a free loopback port with MEDAL_MODELS_DIR set
(the committed `models/` when it holds a usable bundle, else tiny bundles built here) and
drives it with Playwright. Screenshots go to $MEDAL_SCREENSHOTS (default
artifacts/screenshots).
"""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path

import numpy as np
import pytest
from app_helpers import make_models_dir, png, synthetic_lesion
from browser_support import (
    IMAGE,
    PLOTLY_CHART,
    ROOT,
    THRESHOLD_FIELD,
    UPLOAD_INPUT,
    VIEWPORT,
    ServerError,
    StreamlitServer,
    chromium_missing,
    launch_options,
    metrics_text,
    open_page,
    settle,
)

pytestmark = pytest.mark.browser

RUN_TIMEOUT_MS = 120_000

if chromium_missing():
    pytest.skip(chromium_missing(), allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the playwright package is not installed")
expect = sync_api.expect
expect.set_options(timeout=RUN_TIMEOUT_MS)  # a first prediction loads the model


def accepted_seeds(models_dir: Path, wanted: int = 2, tries: int = 16) -> list[int]:
    """Seeds of synthetic lesions that the default bundle takes for lesion images (a real
    model's out-of-distribution check may reject some drawings)."""
    from medal_core.serving.predictor import Predictor
    from medal_views.catalog import scan

    found = scan(models_dir)
    predictor = Predictor.from_folder(found.bundles[found.default_name()].folder)
    seeds = [seed for seed in range(tries) if predictor.predict(synthetic_lesion(seed, 320)).has_estimate]
    return seeds[:wanted]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, list[int]]:
    """(models folder, seeds of two synthetic lesions it accepts): the committed
    `models/` when it has a usable bundle that accepts them, else tiny bundles."""
    from medal_views.catalog import scan

    committed = ROOT / "models"
    if not scan(committed).empty:
        seeds = accepted_seeds(committed)
        if len(seeds) == 2:
            return committed, seeds
    return make_models_dir(tmp_path_factory.mktemp("browser_models"), names=("tiny",)), [0, 1]


@pytest.fixture(scope="module")
def screenshots() -> Path:
    folder = Path(os.environ.get("MEDAL_SCREENSHOTS") or ROOT / "artifacts" / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def server(tmp_path_factory, setup):
    """URL of a streamlit server started for these tests (stopped afterwards)."""
    log = tmp_path_factory.mktemp("streamlit") / "server.log"
    try:
        with StreamlitServer(setup[0], log=log) as running:
            yield running.url
    except ServerError as error:
        pytest.fail(str(error))


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(**launch_options())
        try:
            context = browser.new_context(viewport=VIEWPORT, accept_downloads=True)
            page = context.new_page()
            page.set_default_timeout(RUN_TIMEOUT_MS)
            page.requested = []
            page.on("request", lambda request: page.requested.append(request.url))
            page.goto(server)
            yield page
        finally:
            browser.close()


def write_images(folder: Path, seeds: list[int]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        path = folder / f"lesion_{seed}.png"
        path.write_bytes(png(synthetic_lesion(seed, 320)))
        paths.append(path)
    junk = folder / "not_an_image.png"
    junk.write_bytes(b"definitely not a PNG")
    return paths + [junk]


def test_triage_explorer_and_batch(page, server, setup, screenshots, tmp_path):
    lesion, other, junk = write_images(tmp_path, setup[1])

    # ---- Triage: upload one image, see a probability and the heatmap
    page.locator('[data-testid="stFileUploader"]').first.wait_for()
    settle(page)
    page.screenshot(path=str(screenshots / "01_triage_empty.png"))
    page.locator(UPLOAD_INPUT).first.set_input_files(str(lesion))
    expect(page.get_by_text("Probability of melanoma").first).to_be_visible()
    expect(page.locator('[data-testid="stImageCaption"]').filter(has_text="Grad-CAM")).to_have_count(1)
    settle(page)
    probability = metrics_text(page)["Probability of melanoma"]
    assert re.fullmatch(r"\d{1,3}\.\d%", probability), probability
    images = page.locator(IMAGE)
    assert images.count() >= 2
    heatmap = images.nth(1)
    assert heatmap.evaluate("img => img.complete && img.naturalWidth > 0")
    assert "Grad-CAM" in page.locator('[data-testid="stImageCaption"]').nth(1).inner_text()
    page.get_by_role("button", name="Download case report (HTML)").wait_for()
    page.screenshot(path=str(screenshots / "02_triage_result.png"))

    # ---- Threshold explorer: the preset and the typed threshold move the figures
    open_page(page, "Threshold explorer")
    before = metrics_text(page)
    roc_before = page.locator(PLOTLY_CHART).nth(1).screenshot()
    page.screenshot(path=str(screenshots / "03_explorer_default.png"))
    page.get_by_role("button", name=re.compile(r"^Youden")).click()
    settle(page)
    after_preset = metrics_text(page)
    field = page.locator(THRESHOLD_FIELD).first
    field.fill("0.6000")
    field.press("Enter")
    expect(page.locator('[data-testid="stMain"]')).to_contain_text("Threshold in use: 0.6000")
    settle(page)
    after_slider = metrics_text(page)
    roc_after = page.locator(PLOTLY_CHART).nth(1).screenshot()
    page.screenshot(path=str(screenshots / "04_explorer_moved.png"))
    assert after_slider != after_preset or after_preset != before
    assert (before["Sensitivity"], before["Specificity"]) != (
        after_slider["Sensitivity"],
        after_slider["Specificity"],
    )
    assert roc_before != roc_after

    # ---- Batch triage: three files, the table, the CSV
    open_page(page, "Batch triage")
    page.locator(UPLOAD_INPUT).first.set_input_files([str(lesion), str(other), str(junk)])
    page.get_by_role("button", name="Download results (CSV)").wait_for()
    settle(page)
    assert page.locator('[data-testid="stDataFrame"]').count() == 1
    page.screenshot(path=str(screenshots / "05_batch.png"))
    with page.expect_download() as download_info:
        page.get_by_role("button", name="Download results (CSV)").click()
    rows = list(csv.reader(io.StringIO(Path(download_info.value.path()).read_text())))
    assert rows[0][:4] == ["file", "status", "probability", "decision"]
    assert len(rows) == 4
    assert sorted(r[0] for r in rows[1:]) == sorted([lesion.name, other.name, junk.name])
    assert [r[1] for r in rows[1:]].count("refused") == 1

    # ---- the other pages, for the record
    for link, heading, name in (
        ("Explainability", None, "06_explainability.png"),
        ("Compare models", None, "07_compare.png"),
        ("About / model card", "About MedAL Triage", "08_about.png"),
    ):
        open_page(page, link, heading)
        page.screenshot(path=str(screenshots / name))

    # ---- privacy: the browser never talked to anything but this server
    external = [url for url in page.requested if not url.startswith((server, "data:", "blob:", "about:"))]
    assert external == [], external


# The sidebar field's value and the explorer's "Threshold in use", once they agree.
FIELD_AND_FIGURES_AGREE_JS = (
    """() => {
  const field = document.querySelector('%s');
  const main = document.querySelector('[data-testid="stMain"]');
  const shown = main && /Threshold in use: (\\d\\.\\d{4})/.exec(main.innerText);
  if (!field || !shown) return null;
  const values = [parseFloat(field.value), parseFloat(shown[1])];
  return Math.abs(values[0] - values[1]) < 1e-9 ? values : null;
}"""
    % THRESHOLD_FIELD
)


def test_random_threshold_changes_keep_the_field_and_the_figures_in_step(page, setup):
    """Random sequences of typed values, arrow-key steps and presets: after each, the
    sidebar field, the explorer's "threshold in use" and its sensitivity all describe one
    threshold (seen broken: a field left at 0.660 while the figures were for 0.060)."""
    import random

    from medal_views import explorer
    from medal_views.catalog import scan

    found = scan(setup[0])
    bundle = found.bundles[found.default_name()]
    stored = bundle.report_predictions or bundle.predictions
    open_page(page, "Threshold explorer")
    field = page.locator(THRESHOLD_FIELD).first
    presets = page.get_by_role("button", name=re.compile(r"^(Youden|MedAL|Sensitivity|Model default)"))
    rng = random.Random(20261201)
    for step in range(16):
        action = rng.choice(["type", "arrows", "preset"])
        if action == "type":
            field.fill(f"{rng.uniform(0.001, 0.95):.4f}")
            field.press("Enter")
        elif action == "arrows":
            field.focus()
            for _ in range(rng.randint(1, 3)):
                field.press(rng.choice(["ArrowUp", "ArrowDown"]))
            field.press("Enter")
        else:
            presets.nth(rng.randrange(presets.count())).click()
        settle(page)
        # Waits (up to the page timeout) for the field and the figures to show one
        # threshold: a field left on another value fails here.
        agreed = page.wait_for_function(FIELD_AND_FIGURES_AGREE_JS, polling=100)
        shown, in_use = agreed.json_value()
        assert shown == pytest.approx(in_use, abs=1e-9), (step, action)
        # The figures belong to that threshold (to within its 4 shown decimals).
        points = [
            explorer.at_threshold(stored.labels, stored.probabilities, t, stored.no_estimate)
            for t in np.linspace(in_use - 5e-5, in_use + 5e-5, 11)
        ]
        possible = {f"{point.metrics['sensitivity'].value:.1%}" for point in points}
        assert metrics_text(page)["Sensitivity"] in possible, (step, action, in_use)


# Records, from the first paint, every state of the sidebar's links and the first alert.
RECORD_NAVIGATION_JS = """
window.__medalSeen = [];
new MutationObserver(() => {
  const links = [...document.querySelectorAll('[data-testid="stSidebar"] a')]
      .map(a => a.innerText.split('\\n').pop().trim());
  const alert = document.querySelector('[data-testid="stAlert"]');
  const last = window.__medalSeen[window.__medalSeen.length - 1];
  const state = {links: links.join('|'), alert: alert ? alert.innerText : ''};
  if (!last || last.links !== state.links || last.alert !== state.alert) window.__medalSeen.push(state);
}).observe(document, {subtree: true, childList: true, characterData: true});
"""


def test_a_cold_start_says_it_is_starting_and_never_lists_the_page_files(page, setup, tmp_path):
    """A fresh server: the first paint is the starting message, and the sidebar only ever
    shows the app's own menu (seen before: Streamlit's list of the files in pages/ for
    ~2 s, until st.navigation replaced it)."""
    from medal_ui.layout import PAGES

    titles = "|".join(title for _, title, _ in PAGES)
    with StreamlitServer(setup[0], log=tmp_path / "cold.log") as cold:
        context = page.context.browser.new_context(viewport=VIEWPORT)  # the module's browser
        try:
            fresh = context.new_page()
            fresh.set_default_timeout(RUN_TIMEOUT_MS)
            fresh.add_init_script(RECORD_NAVIGATION_JS)
            fresh.goto(cold.url)
            fresh.wait_for_function(f"() => window.__medalSeen.some(s => s.links === {titles!r})")
            seen = fresh.evaluate("() => window.__medalSeen")
        finally:
            context.close()
    menus = {state["links"] for state in seen} - {""}
    assert menus == {titles}, menus
    first_shown = next(state for state in seen if state["links"] or state["alert"])
    assert "Starting MedAL Triage" in first_shown["alert"], seen[:5]
