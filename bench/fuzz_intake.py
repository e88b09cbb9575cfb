"""Fuzz the upload path (read_upload -> assess_quality -> Predictor.predict) at length.

    nice -n 19 python bench/fuzz_intake.py --cases 10000 --seed 0 --predict-every 20 \\
        --json /tmp/fuzz_intake.json

Runs a fixed list of edge cases once (every seed file, every bomb, odd containers,
every seed with its header claiming 6300 x 6300 (just within the pixel limit) over a
few kB of data, 40-megapixel strips, 19 MB files of empty chunks/segments, NaN/flat
images, every EXIF orientation in four formats, huge EXIF, many-frame files), then
random cases from the families of `tests/fuzz_cases.py` (random bytes, mutated files
of every format, bombs, extreme sizes, EXIF, multi-frame, NaN, odd containers) up to
`--cases` in all. Case i of a family is drawn with `random.Random(f"{seed}:{family}:{i}")`,
so a run repeats.

Each case is timed (time.perf_counter, generation excluded) and its memory measured as
the growth of the process's peak resident set (Linux: freed memory is returned with
malloc_trim and the peak reset through /proc/self/clear_refs before each case; this
sees Pillow's C allocations, which tracemalloc does not; `--tracemalloc` adds
tracemalloc's figure, but slows some code 20-30x). CPU time is reported too, as the
machine's other jobs stretch wall time. Every accepted
image is checked (uint8 (h, w, 3), sides >= MIN_SIDE, h*w <= MAX_PIXELS), measured by
`assess_quality` (finite figures), and every `--predict-every`-th one goes through
the predictor (finite probabilities in [0, 1]).

Printed: total cases; outcomes (accepted, each refusal family with its opening words,
uncaught exception types, invariant/quality/prediction failures); time per case (max,
p99, p50) and peak memory per case (max, p99); a per-family breakdown; the slowest and
heaviest cases. The first examples of every failure (and the slowest cases) are saved
under `--save-dir` with a note on how to reproduce them. Exit status 1 if any
exception escaped or any check failed, else 0.

The predictor uses `--bundle` (default models/mobilenet when it holds a finished
bundle); otherwise a tiny custom CNN is trained once on synthetic images into
/tmp/medal_fuzz_tiny (about ten seconds) and reused on later runs. `--bundle none`
skips predictions.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import resource
import sys
import time
import traceback
import tracemalloc
from collections import Counter, defaultdict
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(REPO_ROOT / "tests"))

import fuzz_cases as fc  # noqa: E402
import numpy as np  # noqa: E402

from medal_core.data.intake import ACCEPTED_FORMATS, MAX_PIXELS, MIN_SIDE, IntakeError, read_upload  # noqa: E402
from medal_core.screening.quality import assess_quality  # noqa: E402

DEFAULT_BUNDLE = REPO_ROOT / "models" / "mobilenet"
TINY_DIR = Path("/tmp/medal_fuzz_tiny")

# Share of the random cases each family gets.
FAMILY_WEIGHTS = {
    "mutation": 45,
    "random_bytes": 15,
    "bomb": 8,
    "extreme_size": 8,
    "exif": 8,
    "multi_frame": 6,
    "nan": 6,
    "odd_container": 4,
}

FAILURE_PREFIXES = (
    "uncaught:",
    "invariant:",
    "quality_error:",
    "predict_error:",
    "bomb_not_refused_for_size",
)


# ---------------------------------------------------------------- measurement


class PeakRss:
    """Growth of the peak resident set during a block (Linux), in bytes, else None.

    Before each case, freed heap memory is handed back to the system (glibc's
    malloc_trim) and the peak is reset, so that a case is charged for the memory it
    needs rather than finding it already held from earlier cases."""

    def __init__(self):
        self.available = fc.rss_peak_reset()
        try:
            import ctypes

            self._trim = ctypes.CDLL("libc.so.6").malloc_trim
        except (OSError, AttributeError):
            self._trim = None

    @staticmethod
    def _kib(field: str) -> int:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    def start(self) -> None:
        if self.available:
            if self._trim is not None:
                self._trim(0)
            fc.rss_peak_reset()
            self.before = self._kib("VmRSS")

    def growth(self) -> int | None:
        return (self._kib("VmHWM") - self.before) * 1024 if self.available else None


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


# ---------------------------------------------------------------- the predictor


def load_predictor(bundle_arg: str | None):
    """(Predictor or None, description)."""
    if bundle_arg and bundle_arg.lower() == "none":
        return None, "none (--bundle none)"
    from medal_core.serving.predictor import Predictor

    if bundle_arg:
        return Predictor.from_folder(bundle_arg), bundle_arg
    if (DEFAULT_BUNDLE / "manifest.json").exists():
        return Predictor.from_folder(DEFAULT_BUNDLE), str(DEFAULT_BUNDLE)
    bundle = TINY_DIR / "bundle"
    if not (bundle / "manifest.json").exists():
        with contextlib.redirect_stdout(sys.stderr):  # training's report: not the summary
            build_tiny_bundle(bundle)
    return Predictor.from_folder(bundle), (
        f"{bundle} (tiny custom CNN: {DEFAULT_BUNDLE} has no finished bundle)"
    )


def build_tiny_bundle(out: Path) -> None:
    """Train a 32 px custom CNN for one epoch on 24 synthetic images (dark benign,
    bright malignant): a complete bundle with temperature and OOD statistics."""
    from PIL import Image

    from medal_core.stages.train import TrainConfig, train

    data = TINY_DIR / "data"
    rng = np.random.default_rng(0)
    for class_name, base in (("benign", 40), ("malignant", 210)):
        folder = data / class_name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(12):
            value = int(base + rng.integers(-20, 21))
            noise = rng.integers(-10, 11, (32, 32, 3))
            pixels = np.clip(value + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{class_name}_{i}.jpg")
    if out.exists():
        import shutil

        shutil.rmtree(out)
    train(TrainConfig(arch="custom_cnn", data=str(data), input_size=32, out=str(out), epochs=1, batch_size=8))


# ---------------------------------------------------------------- cases


def fixed_cases() -> list[tuple[str, str, bytes]]:
    """(family, detail, data) run once each."""
    cases = [("seed", name, data) for name, data in fc.seed_images().items()]
    cases += [("bomb", name, data) for name, data in fc.bomb_cases()]
    cases += [("odd_container", name, data) for name, data in fc.odd_containers()]
    cases += [
        ("extreme_size", "PNG_64x625000_40MP", fc.extreme_aspect(64, 625_000)),
        ("extreme_size", "PNG_625000x64_40MP", fc.extreme_aspect(625_000, 64)),
        ("extreme_size", "PNG_6324x6324_40MP", fc.extreme_aspect(6324, 6324)),
    ]
    cases += [("near_limit", name, data) for name, data in fc.near_limit_cases()]
    cases += [
        (
            "odd_container",
            f"19MB_flood_{kind}",
            fc.segment_flood(kind, 19_000_000 // fc.FLOOD_PIECE_BYTES[kind]),
        )
        for kind in fc.FLOOD_KINDS
    ]
    cases += [("nan", f"float32_{kind}", fc.nan_tiff(kind)) for kind in fc.NAN_KINDS]
    cases += [
        ("nan", f"flat_{kind}={value}", fc.flat_image(kind, value))
        for kind in fc.FLAT_KINDS
        for value in (0, 255)
    ]
    cases += [("nan", "int32_extremes", fc.extreme_int_tiff())]
    cases += [
        ("exif", f"orientation={o}_{fmt}", fc.exif_with_orientation(o, fmt))
        for o in fc.ORIENTATIONS
        for fmt in ("JPEG", "PNG", "WEBP", "TIFF")
    ]
    cases += [
        ("exif", f"huge_60000_orientation={o}", fc.huge_exif_jpeg(o, 60_000))
        for o in (0, 1, 6, 9, 255, 65535)
    ]
    cases += [
        ("multi_frame", f"{fmt}_300_frames", fc.many_frames(fmt, 300))
        for fmt in ("GIF", "PNG", "WEBP", "TIFF", "MPO")
    ]
    return cases


def random_cases(count: int, seed: int):
    """`count` (family, detail, data) drawn from the families by FAMILY_WEIGHTS."""
    picker = random.Random(seed)
    families = list(FAMILY_WEIGHTS)
    weights = [FAMILY_WEIGHTS[name] for name in families]
    drawn = Counter()
    for _ in range(count):
        family = picker.choices(families, weights)[0]
        index = drawn[family]
        drawn[family] += 1
        rng = random.Random(f"{seed}:{family}:{index}")
        detail, data = fc.CASE_FAMILIES[family](rng)
        yield family, f"{detail} [#{index}]", data


# ---------------------------------------------------------------- one case


def check_accepted(upload) -> str | None:
    """None, or what is wrong with an accepted upload."""
    rgb = upload.rgb
    if not isinstance(rgb, np.ndarray):
        return f"rgb is {type(rgb).__name__}"
    if rgb.dtype != np.uint8:
        return f"dtype {rgb.dtype}"
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        return f"shape {rgb.shape}"
    height, width = rgb.shape[:2]
    if min(height, width) < MIN_SIDE:
        return f"side below {MIN_SIDE}: {rgb.shape}"
    if height * width > MAX_PIXELS:
        return f"above {MAX_PIXELS} pixels: {rgb.shape}"
    if upload.format not in ACCEPTED_FORMATS:
        return f"format {upload.format}"
    stored_width, stored_height = upload.original_size
    if (height, width) not in ((stored_height, stored_width), (stored_width, stored_height)):
        return f"shape {rgb.shape} vs original size {upload.original_size}"
    return None


def finite_unit(value) -> bool:
    array = np.asarray(value, dtype=np.float64)
    return bool(np.all(np.isfinite(array)) and np.all((array >= 0) & (array <= 1)))


def run_case(family: str, data: bytes, predictor, predict: bool, rss: PeakRss, use_tracemalloc: bool) -> dict:
    """Run one case; returns outcome, message, timings and memory."""
    result = {"outcome": None, "message": None, "error": None, "predicted": False}
    rss.start()
    if use_tracemalloc:
        tracemalloc.start()
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        upload = read_upload(data)
    except IntakeError as error:
        upload = None
        message = str(error)
        result["message"] = message
        name = fc.message_family(message)
        opening = " ".join(message.split()[:5])
        result["outcome"] = f"refused:{name}" if name else f"refused:UNKNOWN:{opening}"
        if family == "bomb" and name not in fc.SIZE_FAMILIES:
            result["outcome"] = "bomb_not_refused_for_size"
    except BaseException as error:  # noqa: BLE001 - the very thing being looked for
        if isinstance(error, KeyboardInterrupt):
            raise
        upload = None
        result["outcome"] = f"uncaught:{type(error).__name__}"
        result["error"] = traceback.format_exc()
    result["intake_s"] = time.perf_counter() - start
    if upload is not None:
        problem = check_accepted(upload)
        if problem:
            result["outcome"] = f"invariant:{problem.split(':')[0]}"
            result["error"] = problem
        elif family == "bomb":
            result["outcome"] = "bomb_not_refused_for_size"
        else:
            result["outcome"] = "accepted"
            result.update(downstream(upload.rgb, predictor if predict else None))
    result["total_s"] = time.perf_counter() - start
    result["cpu_s"] = time.process_time() - cpu_start
    if use_tracemalloc:
        result["traced_bytes"] = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    result["rss_bytes"] = rss.growth()
    return result


def downstream(rgb: np.ndarray, predictor) -> dict:
    """Quality figures (always) and a prediction (when a predictor is given)."""
    out = {}
    try:
        report = assess_quality(rgb)
        figures = (report.sharpness, report.brightness, report.dark_fraction, report.clipped_fraction)
        if not all(math.isfinite(value) for value in figures):
            return {"outcome": "quality_error:non-finite figure", "error": repr(figures)}
    except Exception:  # noqa: BLE001
        return {"outcome": "quality_error:exception", "error": traceback.format_exc()}
    if predictor is not None:
        try:
            prediction = predictor.predict(rgb)
            out["predicted"] = True
            score = prediction.ood_score
            if not (
                finite_unit(prediction.probability)
                and finite_unit(prediction.view_probabilities)
                and math.isfinite(prediction.logit)
                and (score is None or math.isfinite(score))
            ):
                return {
                    "outcome": "predict_error:non-finite or out of [0, 1]",
                    "predicted": True,
                    "error": repr(
                        (prediction.probability, prediction.view_probabilities, prediction.ood_score)
                    ),
                }
        except Exception:  # noqa: BLE001
            return {"outcome": "predict_error:exception", "error": traceback.format_exc()}
    return out


# ---------------------------------------------------------------- the run


def save_example(
    save_dir: Path, kind: str, index: int, family: str, detail: str, data: bytes, result: dict
) -> Path:
    save_dir.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() else "_" for c in kind)[:60]
    path = save_dir / f"{safe}_{index}.bin"
    path.write_bytes(data)
    path.with_suffix(".txt").write_text(
        f"family: {family}\ncase: {detail}\noutcome: {result['outcome']}\n"
        f"message: {result.get('message')}\nintake seconds: {result['intake_s']:.3f}\n"
        f"peak RSS growth: {result.get('rss_bytes')}\n\n{result.get('error') or ''}\n"
        f"reproduce (from the repository root):\n"
        f'  python -c "from medal_core.data.intake import read_upload; '
        f"print(read_upload(open('{path}', 'rb').read()))\"\n"
    )
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=10_000, help="total cases (fixed + random)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--bundle",
        default=None,
        help=f"bundle folder for predictions (default {DEFAULT_BUNDLE} if "
        "finished, "
        "else a tiny one built in /tmp); 'none' to skip",
    )
    parser.add_argument(
        "--predict-every", type=int, default=20, help="run the predictor on every k-th accepted image"
    )
    parser.add_argument("--json", default=None, help="write the summary here")
    parser.add_argument(
        "--save-dir", default="/tmp/fuzz_intake_cases", help="failing (and slowest) inputs are saved here"
    )
    parser.add_argument("--examples", type=int, default=3, help="examples saved per failure kind")
    parser.add_argument("--slow-seconds", type=float, default=2.0, help="cases slower than this are listed")
    parser.add_argument(
        "--heavy-mb", type=float, default=512.0, help="cases whose peak RSS grew more than this are listed"
    )
    parser.add_argument(
        "--tracemalloc",
        action="store_true",
        help="also measure tracemalloc's peak (slower; misses Pillow's memory)",
    )
    parser.add_argument("--progress-every", type=int, default=1000)
    args = parser.parse_args(argv)

    started = time.perf_counter()
    load_start = os.getloadavg()
    predictor, bundle_text = load_predictor(args.bundle)
    save_dir = Path(args.save_dir)
    rss = PeakRss()

    fixed = fixed_cases()
    total = max(args.cases, len(fixed))

    def all_cases():
        yield from fixed
        yield from random_cases(total - len(fixed), args.seed)

    outcomes = Counter()
    openings: dict[str, Counter] = defaultdict(Counter)  # refusal family -> first words
    per_family: dict[str, dict] = defaultdict(
        lambda: {"cases": 0, "outcomes": Counter(), "times": [], "rss": []}
    )
    times, total_times, cpu_times, rss_values, traced = [], [], [], [], []
    saved: dict[str, list[str]] = defaultdict(list)
    slowest: list[tuple[float, str, str, bytes, dict]] = []
    heavy: list[tuple[float, str, str, float]] = []
    slow: list[tuple[float, str, str]] = []
    accepted_count = predicted = 0
    generation_s = 0.0

    generator = all_cases()
    for index in range(total):
        gen_start = time.perf_counter()
        family, detail, data = next(generator)
        generation_s += time.perf_counter() - gen_start
        will_predict = predictor is not None and accepted_count % max(1, args.predict_every) == 0
        result = run_case(family, data, predictor, will_predict, rss, args.tracemalloc)
        outcome = result["outcome"]
        if outcome == "accepted" or outcome.startswith(("quality_error", "predict_error")):
            accepted_count += 1
        predicted += bool(result.get("predicted"))
        outcomes[outcome] += 1
        if result["message"]:
            openings[outcome][" ".join(result["message"].split()[:6])] += 1
        stats = per_family[family]
        stats["cases"] += 1
        stats["outcomes"][outcome] += 1
        stats["times"].append(result["total_s"])
        times.append(result["intake_s"])
        total_times.append(result["total_s"])
        cpu_times.append(result["cpu_s"])
        if result["rss_bytes"] is not None:
            rss_values.append(result["rss_bytes"])
            stats["rss"].append(result["rss_bytes"])
            if result["rss_bytes"] > args.heavy_mb * 1024 * 1024:
                heavy.append((result["rss_bytes"] / 2**20, family, detail, result["total_s"]))
        if "traced_bytes" in result:
            traced.append(result["traced_bytes"])
        if result["total_s"] > args.slow_seconds:
            slow.append((result["total_s"], family, detail))
        slowest.append((result["total_s"], family, detail, data, result))
        slowest = sorted(slowest, key=lambda item: -item[0])[:3]
        if outcome.startswith(FAILURE_PREFIXES) or ":UNKNOWN:" in outcome:
            if len(saved[outcome]) < args.examples:
                path = save_example(save_dir, outcome, len(saved[outcome]), family, detail, data, result)
                saved[outcome].append(f"{path}  ({family}: {detail})")
        if args.progress_every and (index + 1) % args.progress_every == 0:
            failures = sum(n for o, n in outcomes.items() if o.startswith(FAILURE_PREFIXES))
            print(
                f"[{index + 1}/{total}] {time.perf_counter() - started:.0f} s, "
                f"accepted {outcomes['accepted']}, failures {failures}",
                file=sys.stderr,
                flush=True,
            )

    slowest_saved = [
        f"{save_example(save_dir, 'slowest', i, fam, det, dat, res)}  ({res['total_s']:.2f} s, {fam}: {det})"
        for i, (_, fam, det, dat, res) in enumerate(slowest)
    ]
    failures = {o: n for o, n in outcomes.items() if o.startswith(FAILURE_PREFIXES)}
    uncaught = {o: n for o, n in outcomes.items() if o.startswith("uncaught:")}
    summary = {
        "command": " ".join([sys.executable.split("/")[-1], *sys.argv]),
        "cases": total,
        "fixed_cases": len(fixed),
        "random_cases": total - len(fixed),
        "seed": args.seed,
        "bundle": bundle_text,
        "predict_every": args.predict_every,
        "wall_s": round(time.perf_counter() - started, 1),
        "generation_s": round(generation_s, 1),
        "load_average_start_end": [round(load_start[0], 2), round(os.getloadavg()[0], 2)],
        "outcomes": dict(outcomes.most_common()),
        "refusal_openings": {k: dict(v.most_common(3)) for k, v in sorted(openings.items())},
        "accepted": outcomes["accepted"],
        "predicted": predicted,
        "uncaught": uncaught,
        "failures": failures,
        "intake_time_s": {"max": max(times), "p99": percentile(times, 99), "p50": percentile(times, 50)},
        "case_time_s": {
            "max": max(total_times),
            "p99": percentile(total_times, 99),
            "p50": percentile(total_times, 50),
        },
        "case_cpu_s": {"max": max(cpu_times), "p99": percentile(cpu_times, 99)},
        "process_peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "peak_rss_growth_mb": (
            {"max": max(rss_values) / 2**20, "p99": percentile(rss_values, 99) / 2**20}
            if rss_values
            else None
        ),
        "tracemalloc_peak_mb": (
            {"max": max(traced) / 2**20, "p99": percentile(traced, 99) / 2**20} if traced else None
        ),
        "per_family": {
            name: {
                "cases": s["cases"],
                "outcomes": dict(s["outcomes"].most_common()),
                "max_s": max(s["times"]),
                "p99_s": percentile(s["times"], 99),
                "max_rss_mb": max(s["rss"]) / 2**20 if s["rss"] else None,
            }
            for name, s in sorted(per_family.items())
        },
        "slow_cases": [
            {"seconds": round(t, 2), "family": f, "case": d} for t, f, d in sorted(slow, reverse=True)[:10]
        ],
        "heavy_cases": [
            {"rss_mb": round(m), "family": f, "case": d, "seconds": round(t, 2)}
            for m, f, d, t in sorted(heavy, reverse=True)[:10]
        ],
        "saved_examples": dict(saved),
        "slowest_saved": slowest_saved,
    }
    print_summary(summary)
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2, default=str) + "\n")
        print(f"\nsummary written to {args.json}")
    return 1 if failures else 0


def print_summary(s: dict) -> None:
    print(
        f"fuzz_intake: {s['cases']} cases ({s['fixed_cases']} fixed + {s['random_cases']} "
        f"random, seed {s['seed']}) in {s['wall_s']} s (generation {s['generation_s']} s), "
        f"load average {s['load_average_start_end'][0]} -> {s['load_average_start_end'][1]}"
    )
    print(
        f"predictor: {s['bundle']}; every {s['predict_every']}th accepted image -> "
        f"{s['predicted']} predictions"
    )
    print("\noutcomes:")
    for outcome, count in s["outcomes"].items():
        print(f"  {count:6d}  {outcome}")
        for opening, n in s["refusal_openings"].get(outcome, {}).items():
            print(f'            e.g. "{opening} ..." ({n})')
    print(f"\nuncaught exceptions: {sum(s['uncaught'].values())} {s['uncaught'] or ''}".rstrip())
    print(
        f"failed checks (uncaught, invariants, quality, predictions, bombs): "
        f"{sum(s['failures'].values())} {s['failures'] or ''}".rstrip()
    )
    t, c = s["intake_time_s"], s["case_time_s"]
    print(
        f"\ntime per case, read_upload: max {t['max']:.3f} s, p99 {t['p99'] * 1000:.1f} ms, "
        f"p50 {t['p50'] * 1000:.2f} ms"
    )
    print(
        f"time per case, with quality/predictor: max {c['max']:.3f} s, "
        f"p99 {c['p99'] * 1000:.1f} ms, p50 {c['p50'] * 1000:.2f} ms"
    )
    print(
        f"CPU time per case (this process; the machine's other jobs stretch wall time): "
        f"max {s['case_cpu_s']['max']:.3f} s, p99 {s['case_cpu_s']['p99'] * 1000:.1f} ms"
    )
    if s["peak_rss_growth_mb"]:
        print(
            f"peak RSS growth per case: max {s['peak_rss_growth_mb']['max']:.0f} MB, "
            f"p99 {s['peak_rss_growth_mb']['p99']:.1f} MB; whole process peak "
            f"{s['process_peak_rss_mb']:.0f} MB"
        )
    if s["tracemalloc_peak_mb"]:
        print(
            f"tracemalloc peak per case: max {s['tracemalloc_peak_mb']['max']:.0f} MB, "
            f"p99 {s['tracemalloc_peak_mb']['p99']:.1f} MB"
        )
    print("\nper family:")
    for name, f in s["per_family"].items():
        parts = ", ".join(f"{o.replace('refused:', '')} {n}" for o, n in f["outcomes"].items())
        rss_text = f", max RSS +{f['max_rss_mb']:.0f} MB" if f["max_rss_mb"] is not None else ""
        print(
            f"  {name:14s} {f['cases']:5d} cases, max {f['max_s']:.3f} s, "
            f"p99 {f['p99_s'] * 1000:.1f} ms{rss_text}"
        )
        print(f"  {'':14s} {parts}")
    if s["slow_cases"]:
        print("\nslowest cases above the --slow-seconds mark:")
        for case in s["slow_cases"]:
            print(f"  {case['seconds']:7.2f} s  {case['family']}: {case['case']}")
    if s["heavy_cases"]:
        print("\ncases above the --heavy-mb mark:")
        for case in s["heavy_cases"]:
            print(f"  +{case['rss_mb']} MB ({case['seconds']} s)  {case['family']}: {case['case']}")
    if s["saved_examples"]:
        print("\nsaved examples of failures:")
        for outcome, paths in s["saved_examples"].items():
            print(f"  {outcome}:")
            for path in paths:
                print(f"    {path}")
    print("\nslowest three cases saved:")
    for path in s["slowest_saved"]:
        print(f"  {path}")


if __name__ == "__main__":
    sys.exit(main())
