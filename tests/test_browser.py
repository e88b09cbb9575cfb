"""The app in a real headless Chromium: upload, result and heatmap, the threshold
explorer, and batch triage with its CSV download.

Starts `streamlit run streamlit_app.py` on a free loopback port with MEDAL_MODELS_DIR set
(the committed `models/` with real dermoscopic images from ../shared/data when both are
there, else tiny bundles and drawn lesions) and drives it with Playwright. Screenshots go
to $MEDAL_SCREENSHOTS (default artifacts/screenshots).
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


DATA = ROOT.parent / "shared" / "data"


def candidate_lesions(tries: int = 16) -> list[np.ndarray]:
    """Real dermoscopic images (ISIC 2018 Task 3 test, read from ../shared/data, never
    copied into the project) when they are there, else synthetic lesions."""
    from medal_core.data.datasets import decode_file, load_dataset

    folder = DATA / "isic2018_task3_test"
    if folder.is_dir():
        return [decode_file(path) for path in load_dataset(folder).paths[:tries]]
    return [synthetic_lesion(seed, 320) for seed in range(tries)]


def accepted_lesions(models_dir: Path, wanted: int = 2) -> list[np.ndarray]:
    """Lesion images the default bundle gives an estimate (the shared screen refuses
    drawings that are not like any dermoscopic source)."""
    from medal_core.serving.predictor import Predictor
    from medal_views.catalog import scan

    found = scan(models_dir)
    predictor = Predictor.from_folder(found.bundles[found.default_name()].folder)
    return [rgb for rgb in candidate_lesions() if predictor.predict(rgb).has_estimate][:wanted]


@pytest.fixture(scope="module")
def setup(tmp_path_factory) -> tuple[Path, list[np.ndarray]]:
    """(models folder, two lesion images it gives an estimate): the committed `models/`
    with real dermoscopic images when both are there, else tiny bundles and drawings."""
    from medal_views.catalog import scan

    committed = ROOT / "models"
    if not scan(committed).empty:
        lesions = accepted_lesions(committed)
        if len(lesions) == 2:
            return committed, lesions
    return make_models_dir(tmp_path_factory.mktemp("browser_models"), names=("tiny",)), [
        synthetic_lesion(seed, 320) for seed in (0, 1)
    ]


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


def write_images(folder: Path, lesions: list[np.ndarray]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, rgb in enumerate(lesions):
        path = folder / f"lesion_{i}.png"
        path.write_bytes(png(rgb))
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
    assert re.fullmatch(r"\d{1,3}\.\d%|< 0\.1%", probability), probability
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
        try:
            agreed = page.wait_for_function(FIELD_AND_FIGURES_AGREE_JS, polling=100)
        except sync_api.TimeoutError:
            field_value = field.input_value()
            in_use_text = re.search(r"Threshold in use: \S+", page.inner_text("[data-testid='stMain']"))
            pytest.fail(f"step {step} ({action}): the field shows {field_value}, the page {in_use_text}")
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


def test_the_weaker_bundle_refuses_a_cat_and_a_phone_photo(page, server, setup, screenshots, tmp_path):
    """The weaker custom_cnn said "Refer" for a cat and answered half the phone photos;
    with the shared screen it refuses both, with what to do next, and shows no probability."""
    from medal_core.data.datasets import load_dataset
    from medal_core.stages.fit_screening import patient_split
    from medal_core.stages.non_lesion_pictures import sample_photographs

    if setup[0] != ROOT / "models":
        pytest.skip("needs the committed bundles (and their screen)")
    uploads = {"cat.png": png(sample_photographs(512)["chelsea"])}
    clinical = DATA / "pad_ufes20_clinical"
    if clinical.is_dir():  # a held-out patient's photo, read from ../shared, never copied in
        _, held = patient_split(clinical / "labels.csv")
        photos = load_dataset(clinical)
        uploads["phone_photo.jpg"] = Path(
            photos.paths[np.isin(photos.image_ids, sorted(held))][0]
        ).read_bytes()
    expected = {
        "cat.png": "Not recognised as a dermoscopic lesion image",
        "phone_photo.jpg": "Not a dermoscopic image",
    }
    # A session of its own (the module's page keeps the default bundle), in the same browser.
    context = page.context.browser.new_context(viewport=VIEWPORT)
    try:
        own = context.new_page()
        own.set_default_timeout(RUN_TIMEOUT_MS)
        own.goto(server)
        own.locator('[data-testid="stFileUploader"]').first.wait_for()
        own.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').first.click()
        own.get_by_role("option", name="custom_cnn").click()
        settle(own)
        for name, data in uploads.items():
            path = tmp_path / name
            path.write_bytes(data)
            own.locator(UPLOAD_INPUT).first.set_input_files(str(path))
            expect(own.get_by_text(expected[name]).first).to_be_visible()
            settle(own)
            assert "Probability of melanoma" not in metrics_text(own)
            assert "have a clinician look" in own.locator('[data-testid="stMain"]').inner_text()
            own.screenshot(path=str(screenshots / f"09_custom_cnn_refuses_{Path(name).stem}.png"))
    finally:
        context.close()
