"""Time several bundles side by side in one process, their calls interleaved, so that a
busy CPU slows them alike. Prints figures only; it asserts nothing.

    python bench/compare_bundles.py --bundle models/mobilenetv2 --bundle models/mobilenet \\
        --repeats 40

Per bundle (time.perf_counter, every path warmed up first):

* one view: `predictor.runner(x, views=1)` on one image at the bundle's input size (the
  folded, compiled pass);
* per upload: `predictor.predict(rgb)` on a 640×480 picture (resize, 8 views, the shared
  screen, quality checks), what the app runs;
* Grad-CAM with a gradient pass: `GradCAM.explain_estimate` on the manifest's layer (8
  views), as the app drew it until it came from the prediction's pass;
* per upload with Grad-CAM: `predictor.predict_and_explain(rgb)`, what the app runs now
  (the same maps from the prediction's own pass, where the bundle's layer allows);
* batch throughput: `runner.batched` over 128 images at the bundle's input size, 1 view,
  batches of 64.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))

from bench_inference import percentiles_ms, timed, upload_like  # noqa: E402


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", action="append", required=True, help="a bundle folder (repeat)")
    parser.add_argument("--repeats", type=int, default=40, help="timed calls per figure and bundle")
    args = parser.parse_args(argv)

    from medal_core.data.datasets import resize_for_model
    from medal_core.explain.gradcam import GradCAM
    from medal_core.serving.predictor import Predictor

    load_start = os.getloadavg()
    rgb = upload_like(480, 640)
    paths: dict[str, dict] = {}
    for folder in args.bundle:
        predictor = Predictor.from_folder(folder)
        size = predictor.input_size
        x = resize_for_model(rgb, size)[None].astype(np.float32)
        batch = np.random.default_rng(0).integers(0, 256, (128, size, size, 3)).astype(np.float32)
        cam = GradCAM(predictor.bundle.model, predictor.bundle.manifest["gradcam_layer"])
        paths[Path(folder).name] = {
            "one view": lambda r=predictor.runner, x=x: r(x, views=1),
            "per upload": lambda p=predictor: p.predict(rgb),
            "Grad-CAM (8 views)": lambda c=cam, x=x: c.explain_estimate(x[0]),
            "upload + Grad-CAM": lambda p=predictor: p.predict_and_explain(rgb),
            "batch of 128": lambda r=predictor.runner, b=batch: r.batched(b, views=1, batch_size=64),
        }
    for functions in paths.values():
        for function in functions.values():
            for _ in range(2):
                function()
    times = {(name, what): [] for name, functions in paths.items() for what in functions}
    for _ in range(args.repeats):
        for name, functions in paths.items():
            for what, function in functions.items():
                times[(name, what)].append(timed(function))

    print(f"load average at start {load_start[0]:.2f}, at end {os.getloadavg()[0]:.2f}")
    print(f"{'bundle':<14} {'figure':<20} {'p50':>10} {'p95':>10}")
    for (name, what), seconds in times.items():
        figures = percentiles_ms(seconds)
        if what == "batch of 128":
            rate = 128 / (figures["p50_ms"] / 1000)
            print(f"{name:<14} {what:<20} {rate:>7.1f}/s {'images':>10}")
        else:
            print(f"{name:<14} {what:<20} {figures['p50_ms']:>7.1f} ms {figures['p95_ms']:>7.1f} ms")


if __name__ == "__main__":
    main()
