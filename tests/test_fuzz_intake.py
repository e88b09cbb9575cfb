"""Property-based fuzzing of the upload path: read_upload -> assess_quality -> predict.

Whatever the bytes, `read_upload` either accepts them, giving an (h, w, 3) uint8 image
within the limits that quality checks and the predictor turn into finite numbers, or
refuses them with one of its known messages (`fuzz_cases.MESSAGE_FAMILIES`); nothing
else may escape. Decompression bombs are refused for their size, quickly and without
allocating their pixels. The case generators live in `tests/fuzz_cases.py`, shared
with the longer run in `bench/fuzz_intake.py`.
"""

from __future__ import annotations

import math
import time
import tracemalloc
from pathlib import Path

import fuzz_cases as fc
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from medal_core.data.intake import (
    ACCEPTED_FORMATS,
    MAX_PIXELS,
    MIN_SIDE,
    IntakeError,
    UploadedImage,
    read_upload,
)
from medal_core.evaluation.decision import VERDICT_CODES
from medal_core.screening.quality import assess_quality
from medal_core.serving.predictor import Predictor


def fuzz(examples: int) -> settings:
    """Hypothesis settings: `examples` cases, no deadline, no example database."""
    return settings(
        max_examples=examples, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow]
    )


BOMB_SECONDS = 2.0
BOMB_BYTES = 50 * 1024 * 1024

SEEDS = fc.seed_images()
BOMBS = fc.bomb_cases()
ODD = fc.odd_containers()


# ---------------------------------------------------------------- helpers


def outcome(data: bytes) -> UploadedImage | str:
    """read_upload's result, or the family of its refusal; any other exception (or an
    unknown refusal message) fails the test."""
    try:
        upload = read_upload(data)
    except IntakeError as error:
        family = fc.message_family(str(error))
        assert family is not None, f"unknown refusal message: {error}"
        return family
    check_upload(upload)
    return upload


def check_upload(upload: UploadedImage) -> None:
    """The invariants of an accepted upload."""
    rgb = upload.rgb
    assert isinstance(rgb, np.ndarray) and rgb.dtype == np.uint8
    assert rgb.ndim == 3 and rgb.shape[2] == 3
    height, width = rgb.shape[:2]
    assert min(height, width) >= MIN_SIDE
    assert height * width <= MAX_PIXELS
    assert not rgb.flags.writeable
    assert upload.format in ACCEPTED_FORMATS
    stored_width, stored_height = upload.original_size
    assert (height, width) in ((stored_height, stored_width), (stored_width, stored_height))
    assert all(isinstance(note, str) and note for note in upload.notes)


def check_quality(rgb: np.ndarray) -> None:
    report = assess_quality(rgb)
    for value in (report.sharpness, report.brightness, report.dark_fraction, report.clipped_fraction):
        assert math.isfinite(value)
    assert 0 <= report.brightness <= 255
    assert 0 <= report.dark_fraction <= 1 and 0 <= report.clipped_fraction <= 1


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise LookupError(field)


def measured(function, *args):
    """(result or raised IntakeError, CPU seconds, wall seconds, tracemalloc peak bytes,
    peak RSS growth in bytes or None).

    The call is made twice: timed alone (tracemalloc slows some code 20-30x), then
    under tracemalloc and the RSS peak. tracemalloc sees NumPy and Python allocations;
    Pillow allocates pixel memory with malloc, which only the RSS peak shows. CPU time
    is what the limits are checked on: this machine's other jobs stretch wall time.
    """

    def call():
        try:
            return function(*args)
        except IntakeError as error:
            return error

    cpu, wall = time.process_time(), time.perf_counter()
    result = call()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    has_rss = fc.rss_peak_reset()
    rss_before = rss_kib("VmRSS") if has_rss else 0
    tracemalloc.start()
    try:
        call()
        traced_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    rss_growth = (rss_kib("VmHWM") - rss_before) * 1024 if has_rss else None
    return result, cpu, wall, traced_peak, rss_growth


def within_limits(
    cpu: float,
    wall: float,
    traced_peak: int,
    rss_growth: int | None,
    seconds: float = BOMB_SECONDS,
    memory: int = BOMB_BYTES,
) -> None:
    assert cpu < seconds, f"{cpu:.2f} s of CPU"
    assert wall < 5 * seconds, f"{wall:.2f} s"
    assert traced_peak < memory, f"tracemalloc peak {traced_peak / 2**20:.0f} MB"
    if rss_growth is not None:
        assert rss_growth < memory, f"RSS peak +{rss_growth / 2**20:.0f} MB"


def assert_refused_for_size(data: bytes) -> None:
    result, *figures = measured(read_upload, data)
    assert isinstance(result, IntakeError), f"bomb accepted: {result}"
    assert fc.message_family(str(result)) in fc.SIZE_FAMILIES, str(result)
    assert "megapixel" in str(result)
    within_limits(*figures)


# ---------------------------------------------------------------- (a) arbitrary bytes


@fuzz(150)
@given(st.binary(max_size=4096))
def test_arbitrary_bytes_are_accepted_or_refused_clearly(data):
    outcome(data)


MAGICS = (
    b"\x89PNG\r\n\x1a\n",
    b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR",
    b"\xff\xd8\xff\xe0",
    b"\xff\xd8\xff\xc0",
    b"GIF89a",
    b"GIF87a",
    b"II*\0\x08\0\0\0",
    b"MM\0*\0\0\0\x08",
    b"BM",
    b"RIFF\0\0\0\0WEBPVP8L",
    b"RIFF\0\0\0\0WEBPVP8X",
    b"%!PS-Adobe-3.0",
)


@fuzz(100)
@given(st.sampled_from(MAGICS), st.binary(max_size=2048))
def test_random_bytes_behind_a_magic_number(magic, tail):
    outcome(magic + tail)


# ---------------------------------------------------------------- (b) damaged files


@fuzz(250)
@given(
    name=st.sampled_from(sorted(SEEDS)),
    strategy=st.sampled_from(fc.MUTATIONS),
    rng=st.randoms(use_true_random=False),
    rounds=st.integers(1, 3),
)
def test_damaged_files_are_accepted_or_refused_clearly(name, strategy, rng, rounds):
    data = SEEDS[name]
    for round_ in range(rounds):
        _, data = fc.mutate(data, rng, strategy if round_ == 0 else None)
    outcome(data)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_every_seed_is_accepted(name):
    upload = outcome(SEEDS[name])
    assert isinstance(upload, UploadedImage)
    assert upload.format == fc.seed_format(name)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_truncation_anywhere_in_the_header_is_refused(name):
    data = SEEDS[name]
    for cut in range(0, min(len(data), 96), 7):
        result = outcome(data[:cut])
        assert isinstance(result, str), f"{name} cut at {cut} bytes was accepted"


# ---------------------------------------------------------------- (c) bombs


@pytest.mark.parametrize("name, data", BOMBS, ids=[name for name, _ in BOMBS])
def test_bombs_are_refused_for_their_size_quickly_and_without_allocating(name, data):
    assert_refused_for_size(data)


BOMB_MAKERS = {
    "png": fc.bomb_png,
    "jpeg": fc.bomb_jpeg,
    "tiff": fc.bomb_tiff,
    "bmp": fc.bomb_bmp,
    "gif": fc.bomb_gif,
    "bmp_topdown": lambda w, h: fc.bomb_bmp(w, h, top_down=True),
    "tiff_lzw": lambda w, h: fc.bomb_tiff(w, h, "tiff_lzw"),
    "webp_lossless": lambda w, h: fc.bomb_webp(min(w, 16384), min(h, 16384)),
}


@fuzz(60)
@given(
    kind=st.sampled_from(sorted(BOMB_MAKERS)), width=st.integers(2500, 65535), height=st.integers(2500, 65535)
)
def test_any_declared_size_above_the_limit_is_refused_for_its_size(kind, width, height):
    data = BOMB_MAKERS[kind](width, height)
    declared = min(width, 16384) * min(height, 16384) if kind.startswith("webp") else width * height
    if declared > MAX_PIXELS:
        assert_refused_for_size(data)
    else:
        outcome(data)  # an ordinary size over a tiny file: damaged, never uncaught


def test_declared_size_within_the_limit_over_no_pixel_data_is_refused_in_bounded_time():
    # 36 MP declared, ~100 bytes of data: decoding is attempted (the header is legal),
    # costs at most the declared size, and ends in the damaged-file message.
    data = fc.set_declared_size(fc.encode(fc.pattern(64, 64, "1"), "PNG"), 6000, 6000)
    result, *figures = measured(read_upload, data)
    assert fc.message_family(str(result)) == "damaged"
    within_limits(*figures, seconds=10, memory=400 * 2**20)


@pytest.mark.parametrize("kind", fc.FLOOD_KINDS)
def test_files_made_of_empty_segments_are_refused_quickly(kind):
    # Regression: 19 MB of empty PNG chunks, JPEG segments or GIF sub-blocks took
    # Pillow 5-11 s to walk, and up to +800 MB (JPEG APPn, GIF comments).
    data = fc.segment_flood(kind, 19_000_000 // fc.FLOOD_PIECE_BYTES[kind])
    result, *figures = measured(read_upload, data)
    assert fc.message_family(str(result)) == "damaged"
    within_limits(*figures)


@pytest.mark.parametrize("kind", fc.FLOOD_KINDS)
def test_a_moderate_number_of_empty_segments_is_still_accepted(kind):
    result, *figures = measured(read_upload, fc.segment_flood(kind, 2_000))
    check_upload(result)
    within_limits(*figures)


# ---------------------------------------------------------------- (d) accepted images


@pytest.mark.parametrize("width, height", fc.EXTREME_SIZES)
@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "TIFF"])
def test_tiny_and_extreme_aspect_images(width, height, fmt):
    if fmt == "JPEG" and max(width, height) > 65500:
        fmt = "PNG"
    result = outcome(fc.extreme_aspect(width, height, fmt))
    if min(width, height) < MIN_SIDE:
        assert result == "too_small"
    else:
        assert isinstance(result, UploadedImage)
        check_quality(result.rgb)


def test_quality_of_a_long_strip_needs_little_memory():
    # Regression: the working copy used to be enlarged to shorter side 256 whatever
    # the length, so this 4 MP strip cost ~1.3 GB (a 40 MP one ~13 GB).
    rgb = outcome(fc.extreme_aspect(64, 65500)).rgb
    report, *figures = measured(assess_quality, rgb)
    assert math.isfinite(report.sharpness) and "low_resolution" in report.codes
    within_limits(*figures)


@pytest.mark.parametrize("orientation", fc.ORIENTATIONS)
@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "TIFF"])
def test_any_exif_orientation_value(orientation, fmt):
    upload = outcome(fc.exif_with_orientation(orientation, fmt, size=(96, 64)))
    assert isinstance(upload, UploadedImage)
    # 5-8 turn the image a quarter; 0, 9, 255, 65535 are not orientations: kept as is.
    assert upload.rgb.shape[:2] == ((96, 64) if orientation in (5, 6, 7, 8) else (64, 96))


@pytest.mark.parametrize("orientation", [0, 6, 9, 255])
def test_huge_exif_block(orientation):
    data = fc.huge_exif_jpeg(orientation, 60_000)
    assert len(data) > 60_000
    upload, *figures = measured(read_upload, data)
    check_upload(upload)
    assert upload.rgb.shape[:2] == ((96, 64) if orientation == 6 else (64, 96))
    within_limits(*figures)


@fuzz(30)
@given(rng=st.randoms(use_true_random=False))
def test_malformed_exif_never_costs_the_upload(rng):
    upload = outcome(fc.malformed_exif_jpeg(rng))
    assert isinstance(upload, UploadedImage)


@pytest.mark.parametrize("kind", fc.NAN_KINDS)
def test_float_tiffs_with_nan_inf_and_denormals(kind):
    result = outcome(fc.nan_tiff(kind))
    if kind in ("all_nan", "all_inf"):
        assert result == "no_valid_pixels"
    else:
        assert isinstance(result, UploadedImage)
        check_quality(result.rgb)


@pytest.mark.parametrize("kind", ["tiny_range", "denormal"])
def test_tiny_value_ranges_are_stretched_without_overflow(kind):
    # Regression: scaling in float32 overflowed to inf (scale > 3.4e38) and gave NaN,
    # which was then cast to uint8.
    data = fc.nan_tiff(kind)
    with np.errstate(all="raise"):  # any overflow or NaN would now be refused as damaged
        upload = outcome(data)
    assert isinstance(upload, UploadedImage)
    row = upload.rgb[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    assert np.all(np.diff(row) >= 0)
    if kind == "tiny_range":  # a linear ramp 0 .. 1e-38
        np.testing.assert_allclose(row, np.linspace(0, 255, row.size), atol=1)


@pytest.mark.parametrize("kind", fc.FLAT_KINDS)
@pytest.mark.parametrize("value", [0, 255])
def test_flat_and_all_zero_images(kind, value):
    upload = outcome(fc.flat_image(kind, value))
    assert isinstance(upload, UploadedImage)
    check_quality(upload.rgb)


def test_widest_integer_range_and_float64():
    upload = outcome(fc.extreme_int_tiff())
    assert isinstance(upload, UploadedImage)
    assert set(np.unique(upload.rgb)) == {0, 255}
    values = np.tile(np.linspace(0, 1, 64), (64, 1))
    values[:8, :8] = np.nan
    outcome(fc.float64_tiff(values))


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "WEBP", "TIFF", "MPO"])
def test_multi_frame_files(fmt):
    upload = outcome(fc.multi_frame(fmt, ((64, 64), (64, 64), (64, 64)), ("RGB", "L", "RGB")))
    assert isinstance(upload, UploadedImage)
    assert outcome(fc.many_frames(fmt, 100)) is not None


def test_tiff_whose_first_page_is_tiny_is_refused_despite_large_later_pages():
    data = fc.multi_frame("TIFF", ((1, 1), (640, 640)), ("RGB", "RGB"))
    assert outcome(data) == "too_small"


@pytest.mark.parametrize("name, data", ODD, ids=[name for name, _ in ODD])
def test_odd_containers(name, data):
    cpu = time.process_time()
    result = outcome(data)
    assert time.process_time() - cpu < BOMB_SECONDS
    if name in ("postscript", "pdf", "zip", "svg", "html", "ppm", "ico", "tga"):
        assert result == "not_an_image"


# ---------------------------------------------------------------- quality + predictor


@pytest.fixture(scope="module")
def predictor(trained_tiny_bundle) -> Predictor:
    """The trained tiny bundle (8 views, temperature, OOD statistics)."""
    return Predictor.from_folder(trained_tiny_bundle)


ACCEPTING_FAMILIES = ("extreme_size", "exif", "multi_frame", "nan", "mutation")


@fuzz(60)
@given(family=st.sampled_from(ACCEPTING_FAMILIES), rng=st.randoms(use_true_random=False))
def test_accepted_images_give_finite_quality_figures(family, rng):
    _, data = fc.CASE_FAMILIES[family](rng)
    result = outcome(data)
    if isinstance(result, UploadedImage):
        check_quality(result.rgb)


@fuzz(40)
@given(family=st.sampled_from(ACCEPTING_FAMILIES), rng=st.randoms(use_true_random=False))
def test_accepted_images_give_finite_predictions(predictor, family, rng):
    _, data = fc.CASE_FAMILIES[family](rng)
    result = outcome(data)
    if not isinstance(result, UploadedImage):
        return
    check_prediction(predictor.predict(result.rgb))


@pytest.mark.parametrize("case", ["seeds", "strips", "nan", "flat"])
def test_predictions_on_edge_images_are_finite(predictor, case):
    if case == "seeds":
        datas = list(SEEDS.values())
    elif case == "strips":
        datas = [fc.extreme_aspect(64, 20000), fc.extreme_aspect(20000, 64), fc.extreme_aspect(64, 64)]
    elif case == "nan":
        datas = [fc.nan_tiff(kind) for kind in fc.NAN_KINDS if not kind.startswith("all")]
    else:
        datas = [fc.flat_image(kind, 0) for kind in fc.FLAT_KINDS]
    images = [outcome(data).rgb for data in datas]
    for prediction in predictor.predict_batch(images):
        check_prediction(prediction)


def check_prediction(prediction) -> None:
    assert math.isfinite(prediction.probability) and 0 <= prediction.probability <= 1
    assert math.isfinite(prediction.logit)
    views = prediction.view_probabilities
    assert views.shape == (8,) and np.all(np.isfinite(views))
    assert np.all((views >= 0) & (views <= 1))
    assert prediction.ood_score is None or (math.isfinite(prediction.ood_score) and prediction.ood_score >= 0)
    assert prediction.verdict_code in VERDICT_CODES
    for value in (prediction.quality.sharpness, prediction.quality.brightness):
        assert math.isfinite(value)
