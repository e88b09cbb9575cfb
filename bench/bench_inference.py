"""Time a model bundle on this machine's CPU: loading, single-image latency, Grad-CAM,
batch throughput and memory. Prints figures only; it asserts nothing.

    python bench/bench_inference.py --bundle models/mobilenet --repeats 50 --batch 64 \\
        --json bench/inference.json

What is measured (time.perf_counter; every path is warmed up before it is timed):

* load: `load_bundle` (manifest, sha256 checks, Keras safe-mode load, the shared screen),
  then `Predictor(bundle)` (sub-model and the 8-view pass traced once), separately;
* single image, latency p50/p95 over `--repeats` calls, the three paths interleaved
  call by call so that a busy CPU slows them alike:
    - `predictor.runner(x, views=1)`: our compiled forward pass, one view, on the
      batch-norm-folded copy of the model (`medal_core.modeling.folding`);
    - `ModelRunner(model, fold=False)(x)`: the same compiled pass without folding, to
      show what the folding buys;
    - `model.predict(x, verbose=0)`: Keras' own path, same model and input;
    - `predictor.predict(rgb)`: what the app calls on an upload (resize, 8 dihedral
      views, the shared screen, quality checks), on a 640×480 picture;
* Grad-CAM latency p50/p95 (`explain.GradCAM` on the manifest's `gradcam_layer`);
* throughput in images/s: `runner.batched(images, views=1, batch_size=--batch)` over
  `--images` images (folded, and not folded), and `predictor.predict_batch` (8 views
  each) over `--predict-images`;
* memory: resident set size right after loading, and the peak (ru_maxrss) at the end.

Figures depend on the load of the machine: the load averages at the start and end are
printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))


def current_rss_mib() -> float | None:
    """Resident set size of this process now, in MiB (Linux /proc; None elsewhere)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far, in MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS


def percentiles_ms(seconds: list[float]) -> dict:
    ms = np.asarray(seconds) * 1000
    return {
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(ms.mean()),
        "n": len(ms),
    }


def timed(function) -> float:
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def upload_like(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A lesion-like uint8 RGB picture: a dark textured blob on skin tones."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    blob = ((y - height / 2) / (height / 4)) ** 2 + ((x - width / 2) / (width / 5)) ** 2 < 1
    rgb = np.empty((height, width, 3), np.float32)
    rgb[...] = (205, 160, 135)
    rgb[blob] = (110, 70, 50)
    rgb += rng.normal(0, 12, rgb.shape)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def run(args) -> dict:
    load_start = os.getloadavg()
    start = time.perf_counter()
    import keras
    import tensorflow as tf  # noqa: F401  (timed apart: importing TensorFlow is not loading)

    from medal_core.bundles.bundle import load_bundle
    from medal_core.data.datasets import resize_for_model
    from medal_core.explain.gradcam import GradCAM
    from medal_core.modeling.runner import ModelRunner
    from medal_core.serving.predictor import Predictor

    import_s = time.perf_counter() - start

    start = time.perf_counter()
    bundle = load_bundle(args.bundle)
    load_s = time.perf_counter() - start
    rss_after_load = current_rss_mib()
    start = time.perf_counter()
    predictor = Predictor(bundle)
    predictor_s = time.perf_counter() - start
    rss_after_predictor = current_rss_mib()

    model, runner, size = bundle.model, predictor.runner, predictor.input_size
    unfolded = ModelRunner(model, fold=False)
    rgb = upload_like(480, 640)
    x = resize_for_model(rgb, size)[None].astype(np.float32)

    # ---- single image: warm up each path, then time them interleaved
    paths = {
        "ours_one_view": lambda: runner(x, views=1),
        "ours_one_view_not_folded": lambda: unfolded(x, views=1),
        "keras_model_predict": lambda: model.predict(x, verbose=0),
        "predictor_predict": lambda: predictor.predict(rgb),
    }
    for function in paths.values():
        for _ in range(args.warmup):
            function()
    times = {name: [] for name in paths}
    for _ in range(args.repeats):
        for name, function in paths.items():
            times[name].append(timed(function))
    single = {name: percentiles_ms(t) for name, t in times.items()}
    ratio = single["keras_model_predict"]["p50_ms"] / single["ours_one_view"]["p50_ms"]
    # Same answer from both paths (a sanity check, not a benchmark figure).
    agree = float(
        np.max(
            np.abs(np.asarray(model.predict(x, verbose=0)).ravel() - 1 / (1 + np.exp(-runner(x, views=1)[0])))
        )
    )

    # ---- Grad-CAM
    layer = bundle.manifest["gradcam_layer"]
    cam = GradCAM(model, layer)
    for _ in range(args.warmup):
        cam(x[0])
    gradcam = percentiles_ms([timed(lambda: cam(x[0])) for _ in range(args.repeats)])

    # ---- throughput
    rng = np.random.default_rng(1)
    images = np.stack(
        [resize_for_model(upload_like(300, 400, seed=i), size) for i in range(min(args.images, 16))]
    )
    images = images[rng.integers(0, len(images), args.images)]
    batched_s = {}
    for name, compiled in (("folded", runner), ("not_folded", unfolded)):
        compiled.batched(images[: args.batch], views=1, batch_size=args.batch)  # warm-up
        batched_s[name] = [
            timed(lambda: compiled.batched(images, views=1, batch_size=args.batch))
            for _ in range(args.throughput_runs)
        ]
    uploads = [upload_like(300, 400, seed=i) for i in range(args.predict_images)]
    predictor.predict_batch(uploads[: args.predict_batch], batch_size=args.predict_batch)  # warm-up
    predict_batch_s = [
        timed(lambda: predictor.predict_batch(uploads, batch_size=args.predict_batch))
        for _ in range(args.throughput_runs)
    ]

    return {
        "bundle": str(args.bundle),
        "name": bundle.name,
        "architecture": bundle.manifest["architecture"],
        "input_size": size,
        "parameters": int(model.count_params()),
        "test_time_views": bundle.manifest["test_time_views"],
        "has_screen": bundle.screen is not None,
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "nice": os.nice(0),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
        },
        "settings": {
            "repeats": args.repeats,
            "warmup": args.warmup,
            "batch": args.batch,
            "images": args.images,
            "predict_images": args.predict_images,
            "predict_batch": args.predict_batch,
            "throughput_runs": args.throughput_runs,
        },
        "load": {
            "import_tensorflow_and_medal_core_s": import_s,
            "load_bundle_s": load_s,
            "predictor_init_s": predictor_s,
            "total_s": load_s + predictor_s,
        },
        "single_image": single,
        "keras_predict_over_ours_p50": ratio,
        "max_probability_difference_keras_vs_ours": agree,
        "gradcam": {"layer": layer, **gradcam},
        "throughput": {
            "runner_batched_one_view_images_per_s": args.images / float(np.median(batched_s["folded"])),
            "runner_batched_one_view_not_folded_images_per_s": args.images
            / float(np.median(batched_s["not_folded"])),
            "predict_batch_images_per_s": args.predict_images / float(np.median(predict_batch_s)),
        },
        "memory": {
            "rss_after_load_bundle_mib": rss_after_load,
            "rss_after_predictor_mib": rss_after_predictor,
            "peak_rss_mib": peak_rss_mib(),
        },
    }


def format_table(r: dict) -> str:
    def row(label, value):
        return f"  {label:<52} {value}"

    def lat(entry):
        return f"p50 {entry['p50_ms']:8.2f} ms   p95 {entry['p95_ms']:8.2f} ms"

    def mib(value):
        return "n/a" if value is None else f"{value:8.1f} MiB"

    m, s, single = r["machine"], r["settings"], r["single_image"]
    lines = [
        f"bundle {r['bundle']} ({r['architecture']}, {r['input_size']}px, "
        f"{r['parameters']:,} parameters, shared screen {'yes' if r['has_screen'] else 'no'})",
        f"CPU: {m['cpus']} cores, nice {m['nice']}, load average {m['loadavg_start'][0]:.2f} "
        f"at start, {m['loadavg_end'][0]:.2f} at end; TensorFlow {m['tensorflow']}, Keras {m['keras']}",
        "",
        "load",
        row("import TensorFlow + medal_core", f"{r['load']['import_tensorflow_and_medal_core_s']:8.2f} s"),
        row("load_bundle (verify + Keras load + screen)", f"{r['load']['load_bundle_s']:8.2f} s"),
        row("Predictor(bundle) (fold batch norms, trace)", f"{r['load']['predictor_init_s']:8.2f} s"),
        "",
        f"single image ({s['repeats']} repeats, interleaved, after {s['warmup']} warm-up calls)",
        row("ours, compiled, 1 view: runner(x, views=1)", lat(single["ours_one_view"])),
        row("  the same without batch-norm folding", lat(single["ours_one_view_not_folded"])),
        row("Keras model.predict(x, verbose=0)", lat(single["keras_model_predict"])),
        row("predictor.predict(rgb 640x480): 8 views+screen+quality", lat(single["predictor_predict"])),
        row("ratio model.predict / ours (p50, 1 view)", f"{r['keras_predict_over_ours_p50']:8.1f} x"),
        row(f"Grad-CAM on {r['gradcam']['layer']}", lat(r["gradcam"])),
        "",
        f"throughput (median of {s['throughput_runs']} runs)",
        row(
            f"runner.batched, 1 view, {s['images']} images, batch {s['batch']}",
            f"{r['throughput']['runner_batched_one_view_images_per_s']:8.1f} images/s",
        ),
        row(
            "  the same without batch-norm folding",
            f"{r['throughput']['runner_batched_one_view_not_folded_images_per_s']:8.1f} images/s",
        ),
        row(
            f"predict_batch, 8 views, {s['predict_images']} images, batch {s['predict_batch']}",
            f"{r['throughput']['predict_batch_images_per_s']:8.1f} images/s",
        ),
        "",
        "memory",
        row("RSS after load_bundle", mib(r["memory"]["rss_after_load_bundle_mib"])),
        row("RSS after Predictor(bundle)", mib(r["memory"]["rss_after_predictor_mib"])),
        row("peak RSS (ru_maxrss) at the end", mib(r["memory"]["peak_rss_mib"])),
        "",
        f"(check: model.predict and runner agree to {r['max_probability_difference_keras_vs_ours']:.1e})",
    ]
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--bundle", default="models/mobilenet", help="bundle folder")
    parser.add_argument("--repeats", type=int, default=50, help="timed calls per latency figure")
    parser.add_argument("--warmup", type=int, default=3, help="untimed calls before timing")
    parser.add_argument("--batch", type=int, default=64, help="batch size for runner.batched")
    parser.add_argument("--images", type=int, default=256, help="images for runner.batched")
    parser.add_argument(
        "--predict-images", type=int, default=64, help="uploads for predict_batch (each is 8 forward passes)"
    )
    parser.add_argument(
        "--predict-batch",
        type=int,
        default=16,
        help="predict_batch's batch_size (16, its default: x8 views per pass)",
    )
    parser.add_argument("--throughput-runs", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args(argv)
    for name in ("repeats", "batch", "images", "predict_images", "predict_batch", "throughput_runs"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    from medal_core.bundles.bundle import BundleError

    try:
        results = run(args)
    except BundleError as error:
        raise SystemExit(f"error: {error}") from error
    print(format_table(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
        print(f"figures written to {args.json}")
    return results


if __name__ == "__main__":
    main()
