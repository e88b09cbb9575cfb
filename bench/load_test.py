"""Load test: one streamlit server, N simultaneous browser sessions. Prints figures
(and errors) only; it asserts nothing.

    python bench/load_test.py --sessions 20 --json /tmp/load_20.json
    python bench/load_test.py --sessions 1 --json /tmp/load_1.json      # the baseline

Starts ONE `streamlit run streamlit_app.py` on 127.0.0.1:<free port> (models from
`--models`) and ONE headless Chromium with N browser contexts (Playwright's async API,
`asyncio.gather`); each context is its own Streamlit session and goes, all at the same
time, through:

    open      load the app (Triage page, uploader ready)
    upload    upload an image (a different file per session: `--images`, default the
              ISIC validation benign images, else synthetic lesions)
    result    the probability and the loaded Grad-CAM overlay are shown
    explorer  the Threshold explorer page (metrics and the three figures drawn)
    threshold click a preset threshold; the metrics and the confusion matrix change

A session counts as an error when any step fails or times out (`--timeout` per session,
`--deadline` for the whole run); the step is named. All traffic goes to 127.0.0.1 only
(every request is recorded and any other host is reported).

Before the N sessions, one warm-up session (its own context, closed afterwards) uploads
an image so that the model is loaded: "after model load" is measured then. The model is
cached per process (`st.cache_resource`), not per session: the RSS growth from that
point to the peak with N sessions is printed next to what N copies of the model's
weights would take. `--baseline load_1.json` compares with an earlier 1-session run.

Server figures: resident memory of the server process and its children (/proc statm,
sampled every 0.2 s), after start, after the model load, the peak and at the end; its
CPU time (user + system, /proc stat) per phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import mimetypes
import os
import platform
import sys
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))

from browser_support import (  # noqa: E402
    IMAGE,
    METRIC,
    PLOTLY_CHART,
    SCRIPT_IDLE,
    SIDEBAR_LINK,
    UPLOAD_INPUT,
    VIEWPORT,
    StreamlitServer,
    chromium_missing,
    launch_options,
)

STAGES = ("open", "upload", "result", "explorer", "threshold")
DEFAULT_IMAGES = REPO_ROOT.parent / "shared" / "data" / "isic2017" / "val" / "benign"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}
PRESET_KEYS = ("preset_youden", "preset_sensitivity", "preset_medal")
MIB = 1024 * 1024
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")

# JavaScript polled in the page: the state of the Triage result.
RESULT_STATE_JS = (
    """() => {
  if (document.querySelector('[data-testid="stException"]')) return 'exception';
  const text = document.body.innerText;
  const images = document.querySelectorAll('%s');
  const captions = [...document.querySelectorAll('[data-testid="stImageCaption"]')]
      .map(c => c.innerText);
  const camReady = images.length >= 2 && images[1].complete && images[1].naturalWidth > 0
      && captions.some(c => c.includes('Grad-CAM'));
  if (text.includes('Probability of melanoma') && camReady) return 'ok';
  if (text.includes('Not recognised as a dermoscopic')) return 'not_lesion';
  const errors = [...document.querySelectorAll('[data-testid="stAlertContentError"]')];
  if (errors.some(e => /not an image|damaged|MB|pixels|empty/.test(e.innerText))) return 'refused';
  return null;
}"""
    % IMAGE
)

EXPLORER_READY_JS = """() => {
  const idle = document.querySelector('%s');
  const charts = document.querySelectorAll('%s .main-svg');
  return idle && charts.length >= 3 && document.querySelectorAll('%s').length >= 5;
}""" % (SCRIPT_IDLE, PLOTLY_CHART, METRIC)

FIGURES_JS = """() => {
  const metrics = [...document.querySelectorAll('%s')].map(m => m.innerText).join('|');
  const chart = document.querySelector('%s');
  return {metrics, confusion: chart ? chart.textContent : ''};
}""" % (METRIC, PLOTLY_CHART)


class StepError(Exception):
    """A step that did not end as it should (the message says how)."""


# ---------------------------------------------------------------- server measurements


def _children(pid: int) -> list[int]:
    """All descendants of `pid` (from /proc/*/stat)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * PAGE_SIZE
    except OSError:
        return 0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of `pid` (and of its waited-for children)."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(v) for v in fields[11:15])
    return (utime + stime + cutime + cstime) / CLOCK_TICKS


def _vm_hwm(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


class ServerMonitor:
    """Samples the server's RSS (process + descendants) every `interval` s in a thread."""

    def __init__(self, pid: int, interval: float = 0.2):
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, int]] = []
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._started = time.monotonic()
        self._children_checked = 0.0
        self._descendants: list[int] = []

    def rss(self) -> int:
        now = time.monotonic()
        if now - self._children_checked > 2:  # a /proc scan every 2 s is plenty
            self._descendants = _children(self.pid)
            self._children_checked = now
        return _rss(self.pid) + sum(_rss(child) for child in self._descendants)

    def cpu(self) -> float:
        return _cpu_seconds(self.pid) + sum(_cpu_seconds(c) for c in _children(self.pid))

    def _run(self) -> None:
        while not self._stop.is_set():
            value = self.rss()
            self.peak = max(self.peak, value)
            self.samples.append((round(time.monotonic() - self._started, 2), value))
            self._stop.wait(self.interval)

    def peak_since(self, start: float) -> int:
        values = [v for t, v in self.samples if t >= start - self._started]
        return max(values, default=0)

    def start(self) -> "ServerMonitor":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


# ---------------------------------------------------------------- probe (a separate process)


def probe(models: str, wanted: int, paths: list[str]) -> dict:
    """Run in a child process before the server starts: the resident memory that loading
    the default bundle's model adds to a process that has already imported TensorFlow
    (what each session would cost if the model were loaded per session), and which of
    `paths` (see `read_candidate`) the model takes for lesion images (the first
    `wanted` of them)."""
    import keras  # noqa: F401 - import TensorFlow and Keras first: not the model's cost

    from medal_core.data.intake import read_upload
    from medal_core.serving.predictor import Predictor
    from medal_views.catalog import scan

    catalog = scan(models)
    before = _rss(os.getpid())
    predictor = Predictor.from_folder(catalog.bundles[catalog.default_name()].folder)
    loaded = _rss(os.getpid())
    accepted, rejected = [], []
    for path in paths:
        if len(accepted) >= wanted:
            break
        prediction = predictor.predict(read_upload(read_candidate(path)[2]).rgb)
        (accepted if prediction.has_estimate else rejected).append(path)
    return {
        "model_load_rss": loaded - before,
        "rss_before_model": before,
        "accepted": accepted,
        "rejected": rejected,
    }


def run_probe(models: str, wanted: int, paths: list[Path]) -> dict:
    import subprocess

    command = [sys.executable, __file__, "--models", models, "--probe", str(wanted), *map(str, paths)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900, cwd=REPO_ROOT)
    if done.returncode != 0:
        raise RuntimeError(f"probe failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------- images


def candidates(folder: Path | None, count: int) -> tuple[str, list[str]]:
    """Images to upload, as paths, or "synthetic:SEED" when the folder has none; and
    where they come from."""
    files = []
    if folder is not None and folder.is_dir():
        files = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if files:
        return f"files from {folder}", files
    return f"synthetic lesions (no images in {folder})", [f"synthetic:{i}" for i in range(4 * count)]


def read_candidate(candidate: str) -> tuple[str, str, bytes]:
    """(file name, mime type, bytes) of a path or a "synthetic:SEED" lesion."""
    if candidate.startswith("synthetic:"):
        from app_helpers import png, synthetic_lesion

        seed = int(candidate.split(":", 1)[1])
        return f"synthetic_{seed}.png", "image/png", png(synthetic_lesion(seed, 320))
    path = Path(candidate)
    return path.name, mimetypes.guess_type(path.name)[0] or "image/jpeg", path.read_bytes()


def choose_uploads(chosen: list[str], count: int) -> list[tuple[str, str, bytes]]:
    """`count` uploads, a different image each while there are enough."""
    return [read_candidate(chosen[i % len(chosen)]) for i in range(count)]


# ---------------------------------------------------------------- one session


@dataclass
class SessionResult:
    index: int
    image: str
    ok: bool = False
    failed_step: str | None = None
    error: str | None = None
    stage: str = "start"
    seconds: dict = field(default_factory=dict)  # step → seconds
    upload_to_result_s: float | None = None
    threshold_change_s: float | None = None
    preset: str | None = None
    external_requests: list = field(default_factory=list)


async def run_session(
    browser,
    url: str,
    index: int,
    upload: tuple[str, str, bytes],
    step_timeout_ms: float,
    result: SessionResult,
) -> SessionResult:
    """The whole flow in a fresh browser context; steps recorded into `result`."""
    host = url.rstrip("/")
    context = await browser.new_context(viewport=VIEWPORT)
    try:
        context.on(
            "request",
            lambda request: (
                None
                if request.url.startswith((host + "/", "data:", "blob:", "about:"))
                else result.external_requests.append(request.url)
            ),
        )
        page = await context.new_page()
        page.set_default_timeout(step_timeout_ms)

        async def step(name, coroutine):
            result.stage = name
            started = time.monotonic()
            value = await coroutine
            result.seconds[name] = round(time.monotonic() - started, 3)
            return value

        async def open_app():
            await page.goto(url)
            await page.locator(UPLOAD_INPUT).first.wait_for(state="attached")
            await page.wait_for_selector(SCRIPT_IDLE)

        await step("open", open_app())
        name, mime, data = upload
        upload_started = time.monotonic()
        await step(
            "upload",
            page.locator(UPLOAD_INPUT).first.set_input_files(
                files=[{"name": name, "mimeType": mime, "buffer": data}]
            ),
        )

        async def wait_result():
            handle = await page.wait_for_function(RESULT_STATE_JS, polling=100)
            state = await handle.json_value()
            if state != "ok":
                raise StepError(
                    {
                        "not_lesion": "not recognised as a lesion image: no probability or Grad-CAM shown",
                        "refused": "the upload was refused",
                        "exception": "the page shows an exception",
                    }[state]
                )

        await step("result", wait_result())
        result.upload_to_result_s = round(time.monotonic() - upload_started, 3)
        await page.wait_for_selector(SCRIPT_IDLE)

        async def open_explorer():
            await page.locator(SIDEBAR_LINK, has_text="Threshold explorer").first.click()
            await page.get_by_role("heading", name="Threshold explorer").first.wait_for()
            await page.wait_for_function(EXPLORER_READY_JS, polling=100)

        await step("explorer", open_explorer())

        async def change_threshold():
            before = await page.evaluate(FIGURES_JS)

            async def preset_value(key):
                text = await page.locator(f".st-key-{key} button").first.inner_text()
                return float(text.rsplit("(", 1)[1].split(")")[0])

            # The session is at the model's default threshold; the preset farthest from
            # it, so that the figures change.
            current = await preset_value("preset_default")
            choices = []
            for key in PRESET_KEYS:
                value = await preset_value(key)
                choices.append((abs(value - current), key, page.locator(f".st-key-{key} button").first))
            _, key, button = max(choices, key=lambda c: c[0])
            result.preset = key
            clicked = time.monotonic()
            await button.click()
            await page.wait_for_function(
                """([metrics, confusion, idle]) => {
                     const now = [...document.querySelectorAll('%s')].map(m => m.innerText).join('|');
                     const chart = document.querySelector('%s');
                     return document.querySelector(idle) && now !== metrics
                         && chart && chart.textContent !== confusion;
                   }"""
                % (METRIC, PLOTLY_CHART),
                arg=[before["metrics"], before["confusion"], SCRIPT_IDLE],
                polling=50,
            )
            result.threshold_change_s = round(time.monotonic() - clicked, 3)
            if await page.locator('[data-testid="stException"]').count():
                raise StepError("the page shows an exception")

        await step("threshold", change_threshold())
        result.stage = "done"
        result.ok = True
    finally:
        await context.close()
    return result


async def guarded_session(browser, url, index, upload, timeout_s, step_timeout_ms) -> SessionResult:
    """`run_session` within `timeout_s`; any failure is recorded with its step."""
    result = SessionResult(index, upload[0])
    try:
        await asyncio.wait_for(run_session(browser, url, index, upload, step_timeout_ms, result), timeout_s)
    except asyncio.TimeoutError:
        result.failed_step, result.error = result.stage, f"session timeout ({timeout_s:.0f} s)"
    except asyncio.CancelledError:
        result.failed_step, result.error = result.stage, "overall deadline"
        raise
    except Exception as error:  # noqa: BLE001 - every failure is a finding, with its step
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        result.failed_step, result.error = result.stage, f"{type(error).__name__}: {message[:300]}"
    return result


# ---------------------------------------------------------------- the run


def percentiles(values: list[float]) -> dict:
    """p50, p95 (nearest rank) and max, in seconds."""
    if not values:
        return {"n": 0, "p50": None, "p95": None, "max": None}
    ordered = sorted(values)

    def rank(q):
        return ordered[max(0, math.ceil(q * len(ordered)) - 1)]

    return {"n": len(ordered), "p50": rank(0.50), "p95": rank(0.95), "max": ordered[-1]}


async def drive(args, server: StreamlitServer, monitor: ServerMonitor, uploads, figures: dict):
    from playwright.async_api import async_playwright

    step_timeout_ms = args.timeout * 1000
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(**launch_options())
        try:
            # Warm-up: one session loads the model (and compiles its passes).
            warm = await guarded_session(browser, server.url, -1, uploads[-1], args.timeout, step_timeout_ms)
            figures["warmup"] = asdict(warm)
            await asyncio.sleep(1.0)
            figures["rss_after_model_load"] = monitor.rss()
            figures["cpu_after_model_load_s"] = monitor.cpu()

            started = time.monotonic()
            figures["_sessions_started"] = started
            tasks = [
                asyncio.ensure_future(
                    guarded_session(browser, server.url, i, uploads[i], args.timeout, step_timeout_ms)
                )
                for i in range(args.sessions)
            ]
            done, pending = await asyncio.wait(tasks, timeout=args.deadline)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            results = []
            for i, task in enumerate(tasks):
                if task in done and not task.cancelled():
                    results.append(task.result())
                else:
                    results.append(
                        SessionResult(
                            i,
                            uploads[i][0],
                            failed_step="deadline",
                            error=f"overall deadline ({args.deadline:.0f} s)",
                        )
                    )
            figures["sessions_wall_s"] = round(time.monotonic() - started, 2)
            return results
        finally:
            await browser.close()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=20, help="simultaneous browser sessions")
    parser.add_argument("--timeout", type=float, default=180, help="seconds per session")
    parser.add_argument(
        "--deadline",
        type=float,
        default=None,
        help="seconds for all sessions together (default: timeout + 60)",
    )
    parser.add_argument("--models", default=str(REPO_ROOT / "models"), help="models folder")
    parser.add_argument(
        "--images",
        default=str(DEFAULT_IMAGES),
        help="folder of lesion images to upload (synthetic ones if absent)",
    )
    parser.add_argument("--json", help="write the figures to this file")
    parser.add_argument("--baseline", help="JSON of an earlier run (e.g. --sessions 1) to compare with")
    parser.add_argument(
        "--no-screen",
        action="store_true",
        help="upload the folder's first images as they come, without first "
        "skipping those the model does not take for lesion images",
    )
    parser.add_argument("--probe", type=int, help=argparse.SUPPRESS)  # internal: child process
    args, rest = parser.parse_known_args(argv)
    if args.probe is not None:
        print(json.dumps(probe(args.models, args.probe, rest)))
        return 0
    if rest:
        parser.error(f"unrecognised arguments: {' '.join(rest)}")
    if args.sessions < 1:
        parser.error("--sessions must be at least 1")
    args.deadline = args.deadline or args.timeout + 60
    if chromium_missing():
        print(f"cannot run: {chromium_missing()}", file=sys.stderr)
        return 2
    try:
        import playwright  # noqa: F401
    except ImportError:
        print("cannot run: the playwright package is not installed", file=sys.stderr)
        return 2

    from medal_views.catalog import scan

    catalog = scan(args.models)
    if catalog.empty:
        print(f"cannot run: no usable model bundle in {args.models}", file=sys.stderr)
        return 2
    bundle = catalog.bundles[catalog.default_name()]
    parameters = int(bundle.manifest.get("parameters") or 0)
    # In a child process, before the server starts: the model's memory cost, and which
    # images the model accepts (a real image it takes for "not a lesion" gets no
    # probability or Grad-CAM, and the flow could not be completed with it).
    folder = Path(args.images) if args.images else None
    wanted = args.sessions + 1
    origin, pool = candidates(folder, wanted)
    print(f"probing the model in a child process ({len(pool)} candidate images)...", flush=True)
    probed = run_probe(args.models, 0 if args.no_screen else wanted, pool)
    chosen = pool if args.no_screen else probed["accepted"]
    if not chosen:
        print("cannot run: the model takes none of the images for a lesion image", file=sys.stderr)
        return 2
    uploads = choose_uploads(chosen, wanted)
    source = f"{len(set(chosen[:wanted]))} different {origin}"
    if not args.no_screen:
        tried = len(probed["accepted"]) + len(probed["rejected"])
        source += (
            f" (screened: {len(probed['rejected'])} of {tried} tried were taken for "
            "non-lesion images by the model's OOD check and skipped)"
        )

    figures: dict = {
        "sessions": args.sessions,
        "timeout_s": args.timeout,
        "deadline_s": args.deadline,
        "models": str(args.models),
        "bundle": catalog.default_name(),
        "bundle_parameters": parameters,
        "images": source,
        "cpus": os.cpu_count(),
        "model_load_rss_probe": probed["model_load_rss"],
        "images_rejected_by_ood": [read_candidate(p)[0] for p in probed["rejected"]],
        "load_average_start": os.getloadavg(),
        "python": platform.python_version(),
    }
    started = time.monotonic()
    server = StreamlitServer(args.models)
    monitor = None
    try:
        server.start()
        figures["server_start_s"] = round(time.monotonic() - started, 2)
        monitor = ServerMonitor(server.pid).start()
        time.sleep(0.5)
        figures["rss_after_start"] = monitor.rss()
        figures["cpu_after_start_s"] = monitor.cpu()
        results = asyncio.run(drive(args, server, monitor, uploads, figures))
        figures["rss_peak_sessions"] = monitor.peak_since(figures.pop("_sessions_started"))
        figures["rss_end"] = monitor.rss()
        figures["rss_peak"] = monitor.peak
        figures["vm_hwm_main_process"] = _vm_hwm(server.pid)
        figures["cpu_end_s"] = monitor.cpu()
    finally:
        if monitor is not None:
            monitor.stop()
        server.stop()
    figures["load_average_end"] = os.getloadavg()
    figures["total_wall_s"] = round(time.monotonic() - started, 2)
    figures["server_log_tail"] = server.output()[-2000:].decode(errors="replace")
    figures["rss_samples"] = monitor.samples[:: max(1, len(monitor.samples) // 2000)]

    summarise(figures, results, args)
    report(figures, args)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
        print(f"\nfigures written to {args.json}")
    return 0 if figures["errors_total"] == 0 else 1


def summarise(figures: dict, results: list[SessionResult], args) -> None:
    errors = {stage: 0 for stage in (*STAGES, "deadline")}
    for r in results:
        if not r.ok:
            errors[r.failed_step if r.failed_step in errors else "deadline"] += 1
    figures["errors_by_step"] = errors
    figures["errors_total"] = sum(errors.values())
    figures["sessions_ok"] = sum(r.ok for r in results)
    figures["external_requests"] = sorted({u for r in results for u in r.external_requests})
    figures["upload_to_result_s"] = percentiles(
        [r.upload_to_result_s for r in results if r.upload_to_result_s is not None]
    )
    figures["threshold_change_s"] = percentiles(
        [r.threshold_change_s for r in results if r.threshold_change_s is not None]
    )
    figures["session_results"] = [asdict(r) for r in results]
    growth = figures["rss_peak_sessions"] - figures["rss_after_model_load"]
    figures["rss_growth_model_loaded_to_peak"] = growth
    figures["rss_growth_per_session"] = growth / args.sessions
    figures["model_weights_bytes"] = figures["bundle_parameters"] * 4
    figures["rss_if_model_per_session"] = figures["model_load_rss_probe"] * args.sessions
    figures["cpu_model_load_s"] = round(figures["cpu_after_model_load_s"] - figures["cpu_after_start_s"], 2)
    figures["cpu_sessions_s"] = round(figures["cpu_end_s"] - figures["cpu_after_model_load_s"], 2)


def _mib(value) -> str:
    return "n/a" if value is None else f"{value / MIB:,.0f} MiB"


def _seconds(stats: dict) -> str:
    if not stats["n"]:
        return "no measurement"
    return (
        f"p50 {stats['p50']:.2f} s   p95 {stats['p95']:.2f} s   max {stats['max']:.2f} s   (n={stats['n']})"
    )


def report(f: dict, args) -> None:
    n = f["sessions"]
    print(
        f"\nMedAL Triage load test: {n} simultaneous session{'s' * (n > 1)} "
        f"(one server, one Chromium, {n} context{'s' * (n > 1)}), {f['cpus']} CPUs"
    )
    print(f"  model bundle     {f['bundle']} ({f['bundle_parameters']:,} parameters) from {f['models']}")
    print(f"  images           {f['images']}")
    print(
        f"  load average     {' '.join(f'{v:.2f}' for v in f['load_average_start'])} at start, "
        f"{' '.join(f'{v:.2f}' for v in f['load_average_end'])} at end"
    )
    warmup = "ok" if f["warmup"]["ok"] else "FAILED at " + str(f["warmup"]["failed_step"])
    print(
        f"  warm-up session  {warmup}"
        f" (upload to result {f['warmup']['upload_to_result_s']} s, includes the model load)"
    )
    print(
        f"\nsessions ok: {f['sessions_ok']} of {n} in {f['sessions_wall_s']} s "
        f"(per-session timeout {f['timeout_s']:.0f} s, deadline {f['deadline_s']:.0f} s)"
    )
    print(
        "errors by step:  "
        + "   ".join(f"{k} {v}" for k, v in f["errors_by_step"].items())
        + f"   total {f['errors_total']}"
    )
    for r in f["session_results"]:
        if not r["ok"]:
            print(f"  session {r['index']:2d} ({r['image']}): failed at {r['failed_step']}: {r['error']}")
    print(
        f"requests outside 127.0.0.1: {len(f['external_requests'])}"
        + (f" {f['external_requests'][:5]}" if f["external_requests"] else "")
    )
    print(f"\nupload -> result shown (probability + Grad-CAM loaded): {_seconds(f['upload_to_result_s'])}")
    print(f"threshold preset -> figures changed:                   {_seconds(f['threshold_change_s'])}")
    print("\nserver memory (RSS of the streamlit process and its children)")
    print(f"  after start                        {_mib(f['rss_after_start'])}")
    print(f"  after model load (warm-up session) {_mib(f['rss_after_model_load'])}")
    print(f"  peak during the sessions           {_mib(f['rss_peak_sessions'])}")
    print(f"  at the end                         {_mib(f['rss_end'])}")
    print(f"  peak of the main process (VmHWM)   {_mib(f['vm_hwm_main_process'])}")
    print(
        f"server CPU time: {f['cpu_model_load_s']:.1f} s start-up to model loaded, "
        f"{f['cpu_sessions_s']:.1f} s for the {n} session{'s' * (n > 1)} "
        f"({f['cpu_sessions_s'] / n:.2f} s each), {f['cpu_end_s']:.1f} s in all"
    )
    growth = f["rss_growth_model_loaded_to_peak"]
    cost = f["model_load_rss_probe"]
    print(
        f"\nmodel loaded once per process, not per session: from the model-loaded state "
        f"(1 warm-up session) to the peak with {n} more session{'s' * (n > 1)} the RSS grew "
        f"{_mib(growth)} ({growth / n / MIB:.1f} MiB per session). Loading the model "
        f"(after importing TensorFlow) adds {_mib(cost)} to a process (measured in a child "
        f"process; float32 weights {f['model_weights_bytes'] / MIB:.1f} MiB), so a model "
        f"per session would have added at least {_mib(n * cost)}."
    )
    if args.baseline:
        base = json.loads(Path(args.baseline).read_text())
        added = n - base["sessions"]
        delta = f["rss_peak_sessions"] - base["rss_peak_sessions"]
        per = f" = {delta / added / MIB:.1f} MiB per added session" if added else ""
        print(
            f"against the baseline ({base['sessions']} session{'s' * (base['sessions'] > 1)}, "
            f"{args.baseline}): peak RSS {_mib(base['rss_peak_sessions'])} -> "
            f"{_mib(f['rss_peak_sessions'])}, growth {_mib(delta)}{per}"
        )


if __name__ == "__main__":
    sys.exit(main())
