"""Shared by the browser tests and `bench/load_test.py`: start `streamlit run
streamlit_app.py` on a free loopback port and wait for it, and the Chromium settings and
page selectors used to drive it with Playwright.

Nothing here imports pytest or Playwright, so a script can import it (add `tests/` to
`sys.path`) and decide itself what to do when Chromium or Playwright is missing.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "streamlit_app.py"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
VIEWPORT = {"width": 1400, "height": 1800}  # tall: Streamlit scrolls inside the page

# Selectors of the Streamlit front end (1.67).
SCRIPT_IDLE = '[data-testid="stApp"][data-test-script-state="notRunning"]'
UPLOAD_INPUT = '[data-testid="stFileUploader"] input[type="file"]'
SIDEBAR_LINK = '[data-testid="stSidebar"] a[data-testid="stPageLink-NavLink"]'
METRIC = '[data-testid="stMetric"]'
PLOTLY_CHART = '[data-testid="stPlotlyChart"]'
IMAGE = '[data-testid="stImage"] img'
THRESHOLD_FIELD = '[data-testid="stSidebar"] [data-testid="stNumberInput"] input'
THRESHOLD_IN_USE = re.compile(r"Threshold in use: (\d\.\d{4})")


def chromium_missing() -> str | None:
    """Why the browser cannot run here (None when Chromium is installed)."""
    if not Path(CHROMIUM).exists() or shutil.which(CHROMIUM) is None:
        return f"no Chromium at {CHROMIUM} (apt-get install chromium)"
    return None


def launch_options(**extra) -> dict:
    """Keyword arguments for Playwright's `chromium.launch` (sync or async API)."""
    return {"executable_path": CHROMIUM, "args": list(CHROMIUM_ARGS), **extra}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerError(RuntimeError):
    """The server did not start (the message ends with its output)."""


class StreamlitServer:
    """`streamlit run streamlit_app.py` on 127.0.0.1:<free port>, as a context manager:

        with StreamlitServer(models_dir) as server:
            page.goto(server.url)

    Its stdout and stderr go to `log` (a file path) or, without one, into memory
    (`server.output()`). `env` adds to (or, with a None value, removes from) this
    process's environment. The server is stopped on exit, also when starting failed.
    """

    def __init__(
        self,
        models_dir: str | Path,
        *,
        env: dict | None = None,
        log: str | Path | None = None,
        start_timeout: float = 90,
    ):
        self.models_dir = Path(models_dir)
        self.extra_env = dict(env or {})
        self.log = Path(log) if log is not None else None
        self.start_timeout = start_timeout
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self._buffer = bytearray()
        self._reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def command(self) -> list[str]:
        return [
            sys.executable,
            "-m",
            "streamlit",
            "run",
            str(APP),
            "--server.headless",
            "true",
            "--server.port",
            str(self.port),
            "--server.address",
            "127.0.0.1",
            "--browser.gatherUsageStats",
            "false",
            "--server.fileWatcherType",
            "none",
        ]

    def start(self) -> "StreamlitServer":
        env = {**os.environ, "MEDAL_MODELS_DIR": str(self.models_dir)}
        for key, value in self.extra_env.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = str(value)
        if self.log is not None:
            with open(self.log, "wb") as output:
                self.process = subprocess.Popen(
                    self.command(), cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT
                )
        else:
            self.process = subprocess.Popen(
                self.command(), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
            )
            self._reader = threading.Thread(target=self._drain, daemon=True)
            self._reader.start()
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise
        return self

    def _drain(self) -> None:
        for chunk in iter(lambda: self.process.stdout.read1(65536), b""):
            self._buffer.extend(chunk)

    def _wait_healthy(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as response:
                    if response.read().strip() == b"ok":
                        return
            except OSError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.output()[-3000:].decode(errors="replace")
                raise ServerError(f"streamlit did not start:\n{tail}")
            time.sleep(0.5)

    def output(self) -> bytes:
        """Everything the server wrote to stdout and stderr so far."""
        if self.log is not None:
            return self.log.read_bytes() if self.log.exists() else b""
        return bytes(self._buffer)

    def stop(self) -> None:
        """Terminate the server (kill it after 15 s); only this server's own process."""
        process = self.process
        if process is None or process.poll() is not None:
            self._join_reader()
            return
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        self._join_reader()

    def _join_reader(self) -> None:
        if self._reader is not None:
            self._reader.join(timeout=5)
        if self.process is not None and self.process.stdout is not None:
            self.process.stdout.close()

    def __enter__(self) -> "StreamlitServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


# ---------------------------------------------------------------- Playwright sync-API helpers


# Polled in the page by `settle`: true once the script is idle and nothing on the page has
# changed for QUIET_MS since the later of the last change and the call (`since`).
QUIET_MS = 600
QUIET_JS = (
    """since => {
  if (!window.__medalObserver) {
    window.__medalLastChange = performance.now();
    window.__medalObserver = new MutationObserver(() => { window.__medalLastChange = performance.now(); });
    window.__medalObserver.observe(document.body, {subtree: true, childList: true,
                                                   attributes: true, characterData: true});
  }
  const app = document.querySelector('[data-testid="stApp"]');
  if (!app || app.getAttribute('data-test-script-state') !== 'notRunning') return false;
  return performance.now() - Math.max(since, window.__medalLastChange) > %d;
}"""
    % QUIET_MS
)


def settle(page) -> None:
    """Wait until the script run triggered by the last action has finished and the page
    has stopped changing (a condition polled in the page, not a fixed sleep)."""
    since = page.evaluate("() => performance.now()")
    page.wait_for_function(QUIET_JS, arg=since, polling=100)


def open_page(page, link: str, heading: str | None = None) -> None:
    """Follow a sidebar link (same session, so the shared state carries over)."""
    page.locator(SIDEBAR_LINK, has_text=link).first.click()
    page.get_by_role("heading", name=heading or link).first.wait_for()
    settle(page)


def metrics_text(page) -> dict[str, str]:
    """Label → shown value of every `st.metric` on the page."""
    found = {}
    for metric in page.locator(METRIC).all():
        label = metric.locator('[data-testid="stMetricLabel"]').inner_text().strip()
        found[label] = metric.locator('[data-testid="stMetricValue"]').inner_text().strip()
    return found
