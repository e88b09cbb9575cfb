"""App responsiveness on this machine: prints figures (and errors) only; it asserts nothing.

    python bench/bench_app.py --runs 3 --reruns 20 --json /tmp/bench_app.json

Two targets:

1. Cold start, "from `streamlit run` to the first prediction shown" (target <= 8 s).
   Headless Chromium is launched, and a fresh browser context and page are opened,
   BEFORE the server is started: the browser's own start-up is not counted (a user
   already has a browser open). Then, per run, with a FRESH server each time:

       t0       `streamlit run streamlit_app.py` is spawned (models from `--models`)
       health   /_stcore/health answers "ok" (polled every 20 ms)
       page     the page is open: the uploader is drawn and the first script run ended
       upload   the image (`--image`) is handed to the uploader
       t1       the probability metric and the (loaded) Grad-CAM overlay are visible

   Printed per run and as the median: health, page loaded, first prediction (t1 - t0),
   all from t0, and the split upload -> result (model load, prediction, Grad-CAM and
   the transfer and drawing in the page).
   Then, in the same page, the opacity slider is moved with the keyboard and the time
   from the key press to the new overlay image being loaded is measured (browser
   round trip: the server's rerun plus the transfer and drawing).

2. Reruns of Triage without a new upload (target <= 300 ms of server time), with
   `streamlit.testing.v1.AppTest` in this process: the upload's run (model load,
   prediction, Grad-CAM), then `--reruns` reruns each after
     * moving the heatmap opacity slider,
     * toggling the heatmap direction (the first toggle computes the other direction's
       heatmap, reported on its own; later toggles are served from the session cache),
     * moving the shared decision-threshold slider (sidebar),
     * nothing (a plain rerun: the floor).
   Each figure is the wall time of `AppTest.run()`: the whole script run on the server
   side (plus AppTest's small overhead of reading back the element tree), without the
   network and the browser. It includes the `keras.backend.clear_session()` (with a full
   `gc.collect()`) that Streamlit runs after every script run once Keras is imported,
   shown on its own. A real server also runs `gc.collect(2)` after every run
   (`runner.postScriptGC`), which AppTest skips: it is timed after each run, in this
   process, and added to give the "server est." column (see `RunTimer`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import urllib.request
from importlib import metadata
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(REPO_ROOT / "bench"))

from browser_support import (  # noqa: E402
    APP,
    IMAGE,
    SCRIPT_IDLE,
    UPLOAD_INPUT,
    VIEWPORT,
    ServerError,
    StreamlitServer,
    chromium_missing,
    launch_options,
)
from load_test import RESULT_STATE_JS  # noqa: E402  (probability + loaded Grad-CAM shown)

DEFAULT_IMAGES = REPO_ROOT.parent / "shared" / "data" / "isic2017" / "val" / "benign"
COLD_START_TARGET_S = 8.0
RERUN_TARGET_MS = 300.0
OPACITY = ".st-key-triage_opacity"
OVERLAY_JS = (
    """() => {
  const images = document.querySelectorAll('%s');
  return images.length >= 2 ? images[1].src : null;
}"""
    % IMAGE
)
OVERLAY_CHANGED_JS = """(before) => {
  const images = document.querySelectorAll('%s');
  if (images.length < 2) return false;
  const img = images[1];
  return img.src !== before && img.complete && img.naturalWidth > 0
      && !!document.querySelector('%s');
}""" % (IMAGE, SCRIPT_IDLE)


# ---------------------------------------------------------------- helpers


def load_average() -> str:
    with open("/proc/loadavg") as handle:
        return " ".join(handle.read().split()[:3])


def pick_image(path: str | None) -> tuple[str, str, bytes, str]:
    """(name, mime type, bytes, where from): `--image`, else the first jpg of the ISIC
    validation benign folder, else a synthetic lesion."""
    if path:
        chosen = Path(path)
    else:
        found = sorted(DEFAULT_IMAGES.glob("*.jpg")) if DEFAULT_IMAGES.is_dir() else []
        chosen = found[0] if found else None
    if chosen is not None:
        mime = {
            ".png": "image/png",
            ".webp": "image/webp",
            ".bmp": "image/bmp",
            ".tif": "image/tiff",
            ".tiff": "image/tiff",
        }.get(chosen.suffix.lower(), "image/jpeg")
        return chosen.name, mime, chosen.read_bytes(), str(chosen)
    from app_helpers import png, synthetic_lesion

    return (
        "synthetic_lesion.png",
        "image/png",
        png(synthetic_lesion(0, 320)),
        f"synthetic lesion (no jpg in {DEFAULT_IMAGES})",
    )


def summary_ms(values: list[float]) -> dict:
    """p50 / p95 / max (nearest rank) of durations in seconds, in ms."""
    if not values:
        return {}
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, max(0, -(-95 * len(ordered) // 100) - 1))]
    return {
        "n": len(values),
        "p50_ms": round(statistics.median(ordered) * 1000, 1),
        "p95_ms": round(p95 * 1000, 1),
        "max_ms": round(ordered[-1] * 1000, 1),
        "all_ms": [round(v * 1000, 1) for v in values],
    }


class TimedServer(StreamlitServer):
    """`StreamlitServer` that records when it was spawned and when /_stcore/health first
    answered (polled every 20 ms instead of 500 ms)."""

    spawned_at: float = 0.0
    healthy_at: float = 0.0

    def start(self) -> "TimedServer":
        self.spawned_at = time.monotonic()
        return super().start()

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while self.process.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        self.healthy_at = time.monotonic()
                        return
            except OSError:
                pass
            time.sleep(0.02)
        super()._wait_healthy()  # the base class's error (with the server's output)
        self.healthy_at = time.monotonic()


# ---------------------------------------------------------------- 1. cold start


def cold_start_run(browser, models: Path, image, timeout_s: float, slider_moves: int) -> dict:
    """One fresh server: the times from its spawn to the first prediction shown, then
    `slider_moves` opacity changes timed in the browser."""
    name, mime, data, _ = image
    figures: dict = {"load_average_at_start": load_average()}
    context = browser.new_context(viewport=VIEWPORT)
    page = context.new_page()
    page.set_default_timeout(timeout_s * 1000)
    log = Path(tempfile.mkstemp(prefix="bench_app_server_", suffix=".log")[1])
    server = TimedServer(models, log=log, start_timeout=timeout_s)
    try:
        try:
            server.start()  # t0 = spawn; returns at health OK
        except ServerError as error:
            figures["error"] = str(error)
            return figures
        t0 = server.spawned_at
        figures["health_s"] = round(server.healthy_at - t0, 3)
        page.goto(server.url)
        page.locator(UPLOAD_INPUT).first.wait_for(state="attached")
        page.wait_for_selector(SCRIPT_IDLE)
        figures["page_loaded_s"] = round(time.monotonic() - t0, 3)
        uploaded = time.monotonic()
        page.locator(UPLOAD_INPUT).first.set_input_files(
            files=[{"name": name, "mimeType": mime, "buffer": data}]
        )
        state = page.wait_for_function(RESULT_STATE_JS, polling=20).json_value()
        shown = time.monotonic()
        if state != "ok":
            figures["error"] = f"no prediction with a Grad-CAM shown: page state {state!r}"
            return figures
        figures["first_prediction_s"] = round(shown - t0, 3)
        figures["upload_to_result_s"] = round(shown - uploaded, 3)
        page.wait_for_selector(SCRIPT_IDLE)
        figures["browser_opacity_s"] = browser_slider_moves(page, slider_moves)
    except Exception as error:  # noqa: BLE001 - a failed run is a finding
        figures["error"] = f"{type(error).__name__}: {error}".splitlines()[0]
    finally:
        context.close()
        server.stop()
        if "error" in figures:
            figures["server_log_tail"] = server.output()[-2000:].decode(errors="replace")
        log.unlink(missing_ok=True)
    return figures


def browser_slider_moves(page, moves: int) -> list[float]:
    """Seconds from an ArrowRight on the opacity slider (0.45 -> 0.50 -> ...) to the new
    overlay image loaded and the script idle."""
    times = []
    thumb = page.locator(f'{OPACITY} input[type="range"], {OPACITY} [role="slider"]').first
    for _ in range(moves):
        before = page.evaluate(OVERLAY_JS)
        thumb.focus()
        pressed = time.monotonic()
        page.keyboard.press("ArrowRight")
        page.wait_for_function(OVERLAY_CHANGED_JS, arg=before, polling=10)
        times.append(round(time.monotonic() - pressed, 4))
        page.wait_for_timeout(300)
    return times


def cold_start(args, image) -> dict:
    from playwright.sync_api import sync_playwright

    runs = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(**launch_options())
        try:
            for index in range(args.runs):
                figures = cold_start_run(browser, Path(args.models), image, args.timeout, args.slider_moves)
                figures["run"] = index + 1
                runs.append(figures)
                print_run(figures)
                time.sleep(2)  # let the old server's exit settle
        finally:
            browser.close()
    medians = {}
    for key in ("health_s", "page_loaded_s", "upload_to_result_s", "first_prediction_s"):
        values = [r[key] for r in runs if key in r]
        if values:
            medians[key] = round(statistics.median(values), 3)
    moves = [t for r in runs for t in r.get("browser_opacity_s", [])]
    return {"runs": runs, "median": medians, "browser_opacity": summary_ms(moves)}


def print_run(figures: dict) -> None:
    def cell(key):
        return f"{figures[key]:12.2f} s" if key in figures else f"{'—':>14}"

    label = figures.get("run", "")
    print(
        f"  {str(label):>6}  {cell('health_s')}  {cell('page_loaded_s')}  "
        f"{cell('upload_to_result_s')}  {cell('first_prediction_s')}   "
        f"load {figures['load_average_at_start']}",
        flush=True,
    )
    if "error" in figures:
        print(f"          error: {figures['error']}")
        if figures.get("server_log_tail"):
            print(
                "          server output (tail):\n"
                + "\n".join("            " + line for line in figures["server_log_tail"].splitlines()[-15:])
            )


# ---------------------------------------------------------------- 2. reruns (AppTest)


class RunTimer:
    """Times `AppTest.run()` and splits it: Streamlit calls `keras.backend.clear_session()`
    (`script_runner._clean_problem_modules`, which ends in a full `gc.collect()`) after
    every script run once Keras is imported; that part is timed on its own. A real
    server also runs `gc.collect(2)` after every run (`runner.postScriptGC`, on by
    default), which AppTest skips: it is timed here right after each run, in this
    process (same libraries, model and session data as the server's), and added for
    the server-time estimate."""

    def __init__(self, at):
        from streamlit.runtime.scriptrunner import script_runner

        self.at = at
        self.cleanup: list[float] = []
        original = script_runner._clean_problem_modules

        def timed_cleanup():
            started = time.perf_counter()
            try:
                original()
            finally:
                self.cleanup.append(time.perf_counter() - started)

        script_runner._clean_problem_modules = timed_cleanup

    def run(self) -> dict:
        import gc

        self.cleanup.clear()
        started = time.perf_counter()
        self.at.run()
        run = time.perf_counter() - started
        if self.at.exception:
            raise RuntimeError(f"the script raised: {self.at.exception[0].value}")
        started = time.perf_counter()
        gc.collect(2)
        post_gc = time.perf_counter() - started
        return {"run": run, "keras_cleanup": sum(self.cleanup), "post_gc": post_gc, "server": run + post_gc}


def summarise(samples: list[dict]) -> dict:
    return {
        "apptest_run": summary_ms([s["run"] for s in samples]),
        "of_which_keras_clear_session": summary_ms([s["keras_cleanup"] for s in samples]),
        "post_script_gc": summary_ms([s["post_gc"] for s in samples]),
        "server_estimate": summary_ms([s["server"] for s in samples]),
    }


def reruns(args, image) -> dict:
    os.environ["MEDAL_MODELS_DIR"] = str(Path(args.models).resolve())
    from streamlit.testing.v1 import AppTest

    from medal_ui.session import threshold_widget_key

    name, mime, data, _ = image
    figures: dict = {"load_average_at_start": load_average()}
    at = AppTest.from_file(str(APP), default_timeout=args.timeout)
    timer = RunTimer(at)

    figures["first_page_run_s"] = round(timer.run()["run"], 3)
    at.file_uploader(key="triage_file").set_value((name, data, mime))
    figures["upload_run_s"] = round(timer.run()["run"], 3)
    metrics = {m.label: m.value for m in at.metric}
    if "Probability of melanoma" not in metrics or not any(s.key == "triage_opacity" for s in at.slider):
        figures["error"] = (
            "no probability or no heatmap controls after the upload (not taken "
            "for a lesion image?): "
            + "; ".join(str(e.value) for kind in ("warning", "error", "info") for e in getattr(at, kind))[
                :500
            ]
        )
        return figures
    figures["probability"] = metrics["Probability of melanoma"]
    n = args.reruns

    # Opacity: 0.05 .. 1.0 in steps of 0.05, never the current value twice in a row.
    opacity_values = [round(0.05 * (1 + i % 20), 2) for i in range(n + 1)]
    opacity_values = [v for v in opacity_values if v != 0.45][:n]
    samples = []
    for value in opacity_values:
        at.slider(key="triage_opacity").set_value(value)
        samples.append(timer.run())
    figures["opacity"] = summarise(samples)

    # Direction: the first toggle computes the benign heatmap; then cached both ways.
    at.segmented_control(key="triage_direction").set_value("benign")
    figures["direction_first_toggle"] = summarise([timer.run()])
    samples = []
    for i in range(n):
        at.segmented_control(key="triage_direction").set_value("malignant" if i % 2 == 0 else "benign")
        samples.append(timer.run())
    figures["direction_cached"] = summarise(samples)

    # The shared threshold (sidebar): spread over 0.05 .. 0.95.
    samples = []
    for i in range(n):
        value = round(0.05 + 0.9 * ((i * 7) % n) / max(1, n - 1), 3)
        if value == round(at.session_state["threshold"], 3):
            value = round(value + 0.001, 3)
        # The sidebar field is keyed by the value it shows (`session.threshold_widget_key`).
        at.number_input(key=threshold_widget_key(at.session_state["threshold"])).set_value(value)
        samples.append(timer.run())
    figures["threshold"] = summarise(samples)

    figures["plain_rerun"] = summarise([timer.run() for _ in range(n)])
    figures["probability_after"] = {m.label: m.value for m in at.metric}.get("Probability of melanoma")
    return figures


# ---------------------------------------------------------------- report


def environment() -> dict:
    def version(package):
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "streamlit": version("streamlit"),
        "tensorflow": next(
            (v for v in map(version, ("tensorflow", "tensorflow-cpu")) if v != "not installed"),
            "not installed",
        ),
        "keras": version("keras"),
        "playwright": version("playwright"),
    }


def print_cold_start_summary(cold: dict) -> None:
    m = cold["median"]

    def cell(key):
        return f"{m[key]:12.2f} s" if key in m else f"{'—':>14}"

    print(
        f"  {'median':>6}  {cell('health_s')}  {cell('page_loaded_s')}  "
        f"{cell('upload_to_result_s')}  {cell('first_prediction_s')}"
    )
    if "first_prediction_s" in m:
        verdict = "within" if m["first_prediction_s"] <= COLD_START_TARGET_S else "OVER"
        print(
            f"  first prediction shown, median {m['first_prediction_s']:.2f} s: {verdict} "
            f"the {COLD_START_TARGET_S:.0f} s target"
        )
    moves = cold["browser_opacity"]
    if moves:
        print(
            f"  in the browser, opacity key press -> new overlay loaded: p50 {moves['p50_ms']:.0f} ms, "
            f"p95 {moves['p95_ms']:.0f} ms, max {moves['max_ms']:.0f} ms (n={moves['n']})"
        )


def print_reruns(figures: dict) -> None:
    print(f"  first page run (imports, catalog, no upload): {figures['first_page_run_s']:.2f} s")
    if "upload_run_s" in figures:
        print(f"  upload run (model load, prediction, Grad-CAM): {figures['upload_run_s']:.2f} s")
    if "error" in figures:
        print(f"  error: {figures['error']}")
        return
    print(
        "  ms per rerun: 'AppTest.run' = the script run incl. Streamlit's keras clear_session "
        "(its share in the 'clear_session' column);"
    )
    print(
        "  'server est.' = AppTest.run + the gc.collect(2) a real server adds after each run "
        "(runner.postScriptGC), timed here."
    )
    header = (
        f"  {'rerun after':<38}{'n':>3}  {'AppTest.run p50/p95/max':>24}  "
        f"{'clear_session p50':>17}  {'server est. p50/p95/max':>24}  <= {RERUN_TARGET_MS:.0f} ms"
    )
    print(header)
    rows = (
        ("opacity slider moved", "opacity"),
        ("direction toggled, first (new heatmap)", "direction_first_toggle"),
        ("direction toggled (cached heatmaps)", "direction_cached"),
        ("shared threshold slider moved", "threshold"),
        ("nothing changed (plain rerun)", "plain_rerun"),
    )
    for label, key in rows:
        run, cleanup, server = (
            figures[key][k] for k in ("apptest_run", "of_which_keras_clear_session", "server_estimate")
        )

        def triple(s):
            return f"{s['p50_ms']:.0f} / {s['p95_ms']:.0f} / {s['max_ms']:.0f}"

        verdict = (
            "within"
            if server["max_ms"] <= RERUN_TARGET_MS
            else "p95 within"
            if server["p95_ms"] <= RERUN_TARGET_MS
            else "p50 within"
            if server["p50_ms"] <= RERUN_TARGET_MS
            else "OVER"
        )
        print(
            f"  {label:<38}{run['n']:>3}  {triple(run):>24}  {cleanup['p50_ms']:>17.0f}  "
            f"{triple(server):>24}  {verdict}"
        )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models",
        default=str(REPO_ROOT / "models"),
        help="models folder (MEDAL_MODELS_DIR); default the committed models/",
    )
    parser.add_argument(
        "--image",
        default=None,
        help=f"image to upload; default the first jpg in {DEFAULT_IMAGES}, else a synthetic lesion",
    )
    parser.add_argument("--runs", type=int, default=3, help="cold starts (fresh server each)")
    parser.add_argument("--reruns", type=int, default=20, help="AppTest reruns per widget")
    parser.add_argument(
        "--slider-moves", type=int, default=5, help="opacity moves timed in the browser per cold-start run"
    )
    parser.add_argument("--timeout", type=float, default=180, help="seconds per step")
    parser.add_argument("--skip-browser", action="store_true", help="only the AppTest part")
    parser.add_argument("--skip-apptest", action="store_true", help="only the browser part")
    parser.add_argument("--json", help="also save the figures to this file")
    args = parser.parse_args(argv)

    image = pick_image(args.image)
    report = {
        "environment": environment(),
        "models": str(Path(args.models).resolve()),
        "image": image[3],
        "image_bytes": len(image[2]),
        "load_average_at_start": load_average(),
    }
    env = report["environment"]
    print(
        f"MedAL Triage app benchmark — {env['cpus']} CPUs, Python {env['python']}, "
        f"Streamlit {env['streamlit']}, TensorFlow {env['tensorflow']}"
    )
    print(f"models: {report['models']}")
    print(f"image:  {image[3]} ({len(image[2]) / 1024:.0f} KiB)")
    print(f"load average at start: {report['load_average_at_start']}")

    if not args.skip_browser:
        print()
        print(
            f"1. Cold start: `streamlit run` -> first prediction shown "
            f"(target <= {COLD_START_TARGET_S:.0f} s), {args.runs} runs, fresh server each"
        )
        print(
            "   Chromium (and its context and page) started before the server: browser "
            "start-up not counted. Times from the server's spawn (t0)."
        )
        missing = chromium_missing()
        if missing:
            print(f"  skipped: {missing}")
            report["cold_start"] = {"skipped": missing}
        else:
            print(
                f"  {'run':>6}  {'health OK':>14}  {'page loaded':>14}  {'upload→result':>14}  "
                f"{'1st prediction':>14}"
            )
            report["cold_start"] = cold_start(args, image)
            print_cold_start_summary(report["cold_start"])

    if not args.skip_apptest:
        print()
        print(
            f"2. Triage reruns without a new upload (target <= {RERUN_TARGET_MS:.0f} ms server "
            f"time): AppTest.run() wall time, {args.reruns} reruns each"
        )
        figures = reruns(args, image)
        report["reruns"] = figures
        print_reruns(figures)

    report["load_average_at_end"] = load_average()
    print()
    print(f"load average at end: {report['load_average_at_end']}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"figures saved to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
