"""Scale test of the serving recipe, on 127.0.0.1 only and bounded in time. Prints
figures; asserts nothing.

    python bench/scale_test.py --json /tmp/scale.json

Starts, each on a free loopback port:

* the inference service, `python -m medal_core serve --replicas 2` (Ray Serve);
* 2 Streamlit replicas of the app, with MEDAL_SERVICE_URL pointing at nginx's /v1/;
* nginx (Debian's package) with `deploy/nginx.conf`: sessions spread over the two
  replicas with cookie affinity, the service under /v1/.

Then drives `--sessions` real headless Chromium sessions at once through nginx, each
through upload → result → threshold change (the flow of `bench/load_test.py`), and
reports errors, p50/p95 times, which replica served each session (from nginx's log:
every request of a session must reach one replica) and how many requests reached the
service. Finally it measures the service alone: images/s at 1, 8 and 32 concurrent
clients, with dynamic batching and without (the service restarted with
`--no-batching`), as ratios in one run. Everything is stopped at the end, or after
`--deadline` seconds in any case.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from dataclasses import asdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))
sys.path.insert(0, str(REPO_ROOT / "bench"))

from browser_support import StreamlitServer, chromium_missing, free_port, launch_options  # noqa: E402
from load_test import (  # noqa: E402
    DEFAULT_IMAGES,
    candidates,
    guarded_session,
    percentiles,
    read_candidate,
)

NGINX_TEMPLATE = REPO_ROOT / "deploy" / "nginx.conf"
CONCURRENCY = (1, 8, 32)
STOP_ON_DEADLINE: list = []  # what to stop if the run overruns --deadline


# ---------------------------------------------------------------- processes


class Service:
    """`python -m medal_core serve` in its own process group (Ray's workers with it)."""

    def __init__(self, bundle: str, replicas: int, log: Path, batching: bool = True):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        command = [
            sys.executable,
            "-m",
            "medal_core",
            "serve",
            "--bundle",
            bundle,
            "--replicas",
            str(replicas),
            "--port",
            str(self.port),
            "--host",
            "127.0.0.1",
        ]
        if not batching:
            command.append("--no-batching")
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONPATH": str(REPO_ROOT)}
        self.output = open(log, "wb")
        self.process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            env=env,
            stdout=self.output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the service exited ({self.process.returncode}); see {self.output.name}")
            try:
                with urllib.request.urlopen(self.url + "/v1/health", timeout=2) as answer:
                    return json.loads(answer.read())
            except OSError:
                time.sleep(1)
        raise RuntimeError(f"the service was not ready within {timeout:.0f} s")

    def stop(self) -> None:
        stop_group(self.process)
        self.output.close()


def stop_group(process: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL it after 20 s."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait()


class Nginx:
    def __init__(self, run_dir: Path, app_ports: list[int], service_port: int, port: int):
        self.port = port
        self.url = f"http://127.0.0.1:{self.port}"
        self.run_dir = run_dir
        servers = "\n        ".join(f"server 127.0.0.1:{p};" for p in app_ports)
        config = (
            NGINX_TEMPLATE.read_text()
            .replace("@RUN_DIR@", str(run_dir))
            .replace("@APP_SERVERS@", servers)
            .replace("@SERVICE@", f"127.0.0.1:{service_port}")
            .replace("@LISTEN@", f"127.0.0.1:{self.port}")
        )
        self.config = run_dir / "nginx.conf"
        self.config.write_text(config)
        nginx = shutil.which("nginx") or "/usr/sbin/nginx"
        self.process = subprocess.Popen(
            [nginx, "-p", str(run_dir), "-c", str(self.config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=2):
                    return
            except OSError:
                time.sleep(0.3)
        raise RuntimeError(f"nginx did not answer; see {run_dir / 'error.log'}")

    def log_lines(self) -> list[list[str]]:
        path = self.run_dir / "access.log"
        return [line.split() for line in path.read_text().splitlines()] if path.exists() else []

    def stop(self) -> None:
        stop_group(self.process)


# ---------------------------------------------------------------- the browser sessions


def screened_uploads(service_url: str, folder: Path, count: int) -> list[tuple[str, str, bytes]]:
    """`count` images the service gives an estimate for (the flow waits for one)."""
    _, files = candidates(folder, count)
    chosen = []
    for candidate in files:
        upload = read_candidate(candidate)
        request = urllib.request.Request(service_url + "/v1/predict", data=upload[2], method="POST")
        with urllib.request.urlopen(request, timeout=120) as answer:
            if json.loads(answer.read())["probability"] is not None:
                chosen.append(upload)
        if len(chosen) == count:
            break
    if not chosen:
        raise RuntimeError(f"no image in {folder} gets an estimate")
    return [chosen[i % len(chosen)] for i in range(count)]


async def drive_sessions(url: str, uploads, timeout: float) -> list:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(**launch_options())
        try:
            warm = await guarded_session(browser, url, -1, uploads[0], timeout, timeout * 1000)
            if not warm.ok:
                print(f"warm-up session failed at {warm.failed_step}: {warm.error}", file=sys.stderr)
            started = time.monotonic()
            results = await asyncio.gather(
                *(
                    guarded_session(browser, url, i, uploads[i], timeout, timeout * 1000)
                    for i in range(len(uploads))
                )
            )
            return [results, round(time.monotonic() - started, 2)]
        finally:
            await browser.close()


def replicas_per_session(lines: list[list[str]]) -> dict[str, set[str]]:
    """nginx log → session key → the app replicas that served it (/v1/ excluded)."""
    served: dict[str, set[str]] = defaultdict(set)
    for fields in lines:
        if len(fields) >= 4 and not fields[3].startswith("/v1/"):
            served[fields[0]].add(fields[1])
    return served


# ---------------------------------------------------------------- service throughput


def throughput(url: str, image: bytes, clients: int, seconds: float) -> dict:
    """Images/s with `clients` threads posting `image` for `seconds` (after a warm-up)."""
    done, errors = [0], [0]
    lock = threading.Lock()
    stop_at = time.monotonic() + seconds

    def client():
        while time.monotonic() < stop_at:
            request = urllib.request.Request(url + "/v1/predict", data=image, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=120) as answer:
                    answer.read()
                with lock:
                    done[0] += 1
            except OSError:
                with lock:
                    errors[0] += 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.monotonic() - started
    return {
        "clients": clients,
        "images": done[0],
        "errors": errors[0],
        "images_per_s": round(done[0] / wall, 2),
    }


def measure_service(bundle: str, image: bytes, seconds: float, logs: Path, batching: bool) -> list[dict]:
    service = Service(bundle, 2, logs / f"service_batching_{batching}.log", batching)
    STOP_ON_DEADLINE.append(service.stop)
    try:
        service.wait_ready(300)
        throughput(service.url, image, 4, 5)  # warm-up: trace every batch size
        return [throughput(service.url, image, c, seconds) for c in CONCURRENCY]
    finally:
        service.stop()


# ---------------------------------------------------------------- main


def run(args) -> dict:
    figures: dict = {"sessions": args.sessions, "bundle": args.bundle, "cpus": os.cpu_count()}
    logs = Path(tempfile.mkdtemp(prefix="medal_scale_"))
    figures["logs"] = str(logs)
    started = time.monotonic()
    service = Service(args.bundle, 2, logs / "service.log")
    STOP_ON_DEADLINE.append(service.stop)
    apps: list[StreamlitServer] = []
    nginx = None
    try:
        figures["service_health"] = service.wait_ready(300)
        figures["service_start_s"] = round(time.monotonic() - started, 1)
        app_ports = [free_port(), free_port()]
        # The replicas call the service through nginx, so its log counts those calls.
        nginx_port = free_port()
        for i in range(2):
            server = StreamlitServer(
                Path(args.bundle).parent,
                log=logs / f"app_{i}.log",
                env={"MEDAL_SERVICE_URL": f"http://127.0.0.1:{nginx_port}", "MEDAL_API_TOKEN": None},
            )
            server.port, server.url = app_ports[i], f"http://127.0.0.1:{app_ports[i]}"
            apps.append(server)
            STOP_ON_DEADLINE.append(server.stop)
            server.start()
        nginx = Nginx(logs, app_ports, service.port, nginx_port)
        STOP_ON_DEADLINE.append(nginx.stop)
        uploads = screened_uploads(service.url, Path(args.images), args.sessions)
        results, wall = asyncio.run(drive_sessions(nginx.url, uploads, args.timeout))
        figures["sessions_wall_s"] = wall
        figures["results"] = [asdict(r) for r in results]
        figures["errors"] = sum(not r.ok for r in results)
        figures["upload_to_result_s"] = percentiles(
            [r.upload_to_result_s for r in results if r.upload_to_result_s is not None]
        )
        figures["threshold_change_s"] = percentiles(
            [r.threshold_change_s for r in results if r.threshold_change_s is not None]
        )
        lines = nginx.log_lines()
        served = replicas_per_session(lines)
        browser_sessions = {
            k: v for k, v in served.items() if any("/_stcore/stream" in f[3] for f in lines if f[0] == k)
        }
        figures["sessions_per_replica"] = dict(
            Counter(",".join(sorted(v)) for v in browser_sessions.values())
        )
        figures["sessions_on_two_replicas"] = sum(len(v) > 1 for v in browser_sessions.values())
        figures["service_requests_via_nginx"] = sum(
            1 for f in lines if len(f) >= 4 and f[3].startswith("/v1/predict")
        )
        figures["service_explain_requests_via_nginx"] = sum(
            1 for f in lines if len(f) >= 4 and f[3].startswith("/v1/explain")
        )
    finally:
        if nginx is not None:
            nginx.stop()
        for server in apps:
            server.stop()
        service.stop()
    if not args.skip_throughput:
        image = uploads[0][2]
        from PIL import Image

        with Image.open(io.BytesIO(image)) as opened:
            figures["throughput_image"] = {
                "file": uploads[0][0],
                "bytes": len(image),
                "pixels": list(opened.size),
            }
        with_batching = measure_service(args.bundle, image, args.seconds, logs, True)
        without = measure_service(args.bundle, image, args.seconds, logs, False)
        figures["throughput"] = {
            "batching": with_batching,
            "no_batching": without,
            "ratio": [
                round(a["images_per_s"] / max(b["images_per_s"], 1e-9), 2)
                for a, b in zip(with_batching, without)
            ],
        }
    figures["total_s"] = round(time.monotonic() - started, 1)
    return figures


def report(f: dict) -> None:
    print(
        f"scale test: {f['sessions']} browser sessions via nginx → 2 Streamlit replicas → "
        f"Ray Serve (2 model replicas), bundle {f['bundle']}, {f['cpus']} CPUs"
    )
    print(f"  service ready after {f['service_start_s']} s: {f['service_health']}")
    print(f"  errors: {f['errors']} of {f['sessions']} sessions (wall {f['sessions_wall_s']} s)")
    for r in f["results"]:
        if not r["ok"]:
            print(f"    session {r['index']}: {r['failed_step']}: {r['error']}")
    for name in ("upload_to_result_s", "threshold_change_s"):
        s = f[name]
        print(f"  {name}: p50 {s['p50']} s, p95 {s['p95']} s, max {s['max']} s (n={s['n']})")
    print(
        f"  sessions per app replica: {f['sessions_per_replica']}; "
        f"sessions that reached two replicas: {f['sessions_on_two_replicas']}"
    )
    print(
        f"  service requests through nginx: {f['service_requests_via_nginx']} predict, "
        f"{f['service_explain_requests_via_nginx']} explain"
    )
    if "throughput" in f:
        t = f["throughput"]
        image = f["throughput_image"]
        print(
            f"  service throughput (images/s), 2 replicas, one {image['pixels'][0]}x"
            f"{image['pixels'][1]} JPEG ({image['bytes'] / 2**20:.1f} MB) posted again and again:"
        )
        for a, b, ratio in zip(t["batching"], t["no_batching"], t["ratio"]):
            print(
                f"    {a['clients']:>2} clients: batching {a['images_per_s']:>6} "
                f"(errors {a['errors']}), none {b['images_per_s']:>6} (errors {b['errors']}), "
                f"ratio {ratio}"
            )
    print(f"  total {f['total_s']} s; logs in {f['logs']}")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", default=str(REPO_ROOT / "models" / "mobilenet"))
    parser.add_argument("--sessions", type=int, default=10)
    parser.add_argument("--timeout", type=float, default=240, help="seconds per browser session")
    parser.add_argument("--seconds", type=float, default=15, help="per throughput measurement")
    parser.add_argument("--images", default=str(DEFAULT_IMAGES))
    parser.add_argument("--deadline", type=float, default=1500, help="the whole run, seconds")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if chromium_missing():
        print(chromium_missing(), file=sys.stderr)
        return 2
    if not shutil.which("nginx") and not Path("/usr/sbin/nginx").exists():
        print("no nginx (apt-get install nginx)", file=sys.stderr)
        return 2

    # A hard stop, whatever happens: every started process goes after the deadline.
    def overrun():
        print(f"deadline of {args.deadline:.0f} s reached: stopping everything", file=sys.stderr)
        for stop in reversed(STOP_ON_DEADLINE):
            try:
                stop()
            except Exception:  # noqa: BLE001 - stop the rest regardless
                pass
        os._exit(3)

    timer = threading.Timer(args.deadline, overrun)
    timer.daemon = True
    timer.start()
    figures = run(args)
    timer.cancel()
    report(figures)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
