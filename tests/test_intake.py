"""read_upload on tiny images made in memory: formats, modes, orientation, refusals."""

import io
import struct
import time
import zlib

import numpy as np
import pytest
from PIL import Image

from medal_core.data.intake import MAX_BYTES, IntakeError, UploadedImage, read_upload

RED, BLUE = (255, 0, 0), (0, 0, 255)


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    """The bytes `image.save` writes for `fmt`."""
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def texture(width: int = 96, height: int = 80, seed: int = 0) -> Image.Image:
    """A random RGB image of width x height pixels."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


def solid(colour, size=(64, 64), mode="RGB") -> Image.Image:
    return Image.new(mode, size, colour)


def patch_png_size(png: bytes, width: int, height: int) -> bytes:
    """A PNG whose IHDR declares width x height (CRC fixed), pixel data unchanged."""
    header = png[12:16] + struct.pack(">II", width, height) + png[24:29]
    assert header[:4] == b"IHDR"
    return png[:12] + header + struct.pack(">I", zlib.crc32(header)) + png[33:]


def assert_refused(data, *fragments, **limits) -> str:
    """read_upload refuses `data`; the message holds each fragment (case-insensitive)."""
    with pytest.raises(IntakeError) as caught:
        read_upload(data, **limits)
    message = str(caught.value)
    for fragment in fragments:
        assert fragment.lower() in message.lower(), message
    return message


# ---------------------------------------------------------------- formats


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_each_format_decodes_to_uint8_rgb(fmt):
    upload = read_upload(encode(texture(96, 80), fmt))
    assert isinstance(upload, UploadedImage)
    assert upload.format == fmt
    assert upload.rgb.shape == (80, 96, 3) and upload.rgb.dtype == np.uint8
    assert upload.original_size == (96, 80)


@pytest.mark.parametrize("fmt", ["PNG", "TIFF", "BMP", "WEBP"])
def test_lossless_formats_keep_pixels(fmt):
    image = texture(72, 64)
    options = {"lossless": True} if fmt == "WEBP" else {}
    upload = read_upload(encode(image, fmt, **options))
    np.testing.assert_array_equal(upload.rgb, np.asarray(image))
    assert upload.notes == ()


def test_output_is_read_only():
    rgb = read_upload(encode(texture(), "PNG")).rgb
    with pytest.raises(ValueError):
        rgb[0, 0] = 0


@pytest.mark.parametrize(
    "fmt, options",
    [
        ("TIFF", {}),
        ("GIF", {"duration": 100, "loop": 0}),
        ("PNG", {"duration": 100}),  # animated PNG
        ("WEBP", {"duration": 100, "lossless": True}),
    ],
)
def test_multi_frame_files_use_the_first_frame(fmt, options):
    first, second = solid(RED), solid(BLUE)
    data = encode(first, fmt, save_all=True, append_images=[second], **options)
    upload = read_upload(data)
    assert tuple(upload.rgb[32, 32]) == RED
    assert any("first frame" in note for note in upload.notes)


def test_camera_mpo_is_reported_as_jpeg_without_a_note():
    data = encode(solid(RED), "MPO", save_all=True, append_images=[solid(BLUE)])
    upload = read_upload(data)
    assert upload.format == "JPEG" and upload.notes == ()
    np.testing.assert_allclose(upload.rgb[32, 32], RED, atol=3)


# ---------------------------------------------------------------- modes


def test_rgba_is_composited_on_mid_grey():
    image = Image.new("RGBA", (64, 64), (255, 0, 0, 128))
    image.paste((0, 255, 0, 0), (0, 0, 32, 64))  # left half fully transparent
    upload = read_upload(encode(image, "PNG"))
    assert upload.original_mode == "RGBA"
    # right half: 255 * 128/255 + 128 * 127/255 = 191.75; 128 * 127/255 = 63.75
    np.testing.assert_allclose(upload.rgb[10, 50], (192, 64, 64), atol=1)
    assert tuple(upload.rgb[10, 10]) == (128, 128, 128)
    assert "transparent areas filled with grey" in upload.notes


def test_opaque_rgba_has_no_transparency_note():
    upload = read_upload(encode(solid((10, 20, 30, 255), mode="RGBA"), "PNG"))
    assert tuple(upload.rgb[0, 0]) == (10, 20, 30)
    assert upload.notes == ()


def test_la_is_composited_on_grey():
    image = Image.new("LA", (64, 64), (200, 255))
    image.paste((0, 0), (0, 0, 64, 32))  # top half transparent
    upload = read_upload(encode(image, "PNG"))
    assert tuple(upload.rgb[5, 5]) == (128, 128, 128)
    assert tuple(upload.rgb[50, 5]) == (200, 200, 200)


def palette_image() -> Image.Image:
    """P-mode 64x64: index 0 red on the left half, index 1 blue on the right."""
    image = Image.new("P", (64, 64), 0)
    image.putpalette([*RED, *BLUE] + [0] * 762)
    image.paste(1, (32, 0, 64, 64))
    return image


def test_palette_is_expanded():
    upload = read_upload(encode(palette_image(), "PNG"))
    assert upload.original_mode == "P"
    assert tuple(upload.rgb[0, 0]) == RED and tuple(upload.rgb[0, 63]) == BLUE


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_is_composited(fmt):
    upload = read_upload(encode(palette_image(), fmt, transparency=1))
    assert tuple(upload.rgb[0, 0]) == RED
    assert tuple(upload.rgb[0, 63]) == (128, 128, 128)


def test_greyscale_becomes_three_equal_channels():
    grey = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))
    upload = read_upload(encode(Image.fromarray(grey, "L"), "PNG"))
    assert upload.original_mode == "L"
    for channel in range(3):
        np.testing.assert_array_equal(upload.rgb[:, :, channel], grey)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF"])
def test_one_bit_becomes_black_and_white(fmt):
    image = Image.new("1", (64, 64), 0)
    image.paste(1, (0, 0, 32, 64))
    upload = read_upload(encode(image, fmt))
    assert upload.original_mode == "1"
    assert tuple(upload.rgb[0, 0]) == (255, 255, 255) and tuple(upload.rgb[0, 63]) == (0, 0, 0)


def ramp16(top: int = 65535) -> np.ndarray:
    """(64, 64) uint16 ramp from 0 to `top` along the columns."""
    return np.tile(np.linspace(0, top, 64).round().astype(np.uint16), (64, 1))


def test_16_bit_png_is_scaled_not_clipped():
    upload = read_upload(encode(Image.fromarray(ramp16()), "PNG"))
    assert upload.original_mode == "I;16"
    row = upload.rgb[0, :, 0].astype(int)
    assert row[0] == 0 and row[-1] == 255
    np.testing.assert_allclose(row, np.linspace(0, 255, 64), atol=1)  # linear, not white
    assert upload.rgb.mean() == pytest.approx(127.5, abs=1)


def test_16_bit_range_actually_used_is_stretched():
    # 12-bit data in a 16-bit file must not come out nearly black.
    upload = read_upload(encode(Image.fromarray(ramp16(4095)), "PNG"))
    assert upload.rgb.max() == 255 and upload.rgb.min() == 0


def test_big_endian_16_bit_tiff():
    image = Image.fromarray(ramp16().astype(">u2"))
    assert image.mode == "I;16B"
    upload = read_upload(encode(image, "TIFF"))
    assert upload.original_mode == "I;16B"
    np.testing.assert_allclose(upload.rgb[0, :, 1], np.linspace(0, 255, 64), atol=1)


@pytest.mark.parametrize("dtype", [np.int32, np.float32])
def test_32_bit_tiff_is_scaled(dtype):
    values = (ramp16().astype(np.float64) * 1000).astype(dtype)  # far above 255
    upload = read_upload(encode(Image.fromarray(values), "TIFF"))
    assert upload.original_mode == ("I" if dtype == np.int32 else "F")
    np.testing.assert_allclose(upload.rgb[0, :, 2], np.linspace(0, 255, 64), atol=1)


def test_float_tiff_with_nan_gives_finite_pixels():
    values = np.tile(np.linspace(0.0, 1.0, 64, dtype=np.float32), (64, 1))
    values[:8, :8] = np.nan
    upload = read_upload(encode(Image.fromarray(values), "TIFF"))
    assert upload.rgb.dtype == np.uint8
    assert tuple(upload.rgb[0, 0]) == (0, 0, 0)
    assert upload.rgb[40, 63, 0] == 255
    assert any("no value" in note for note in upload.notes)


def test_all_nan_float_tiff_is_refused():
    values = np.full((64, 64), np.nan, dtype=np.float32)
    assert_refused(encode(Image.fromarray(values), "TIFF"), "no valid pixel values")


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_is_converted_to_rgb(fmt):
    upload = read_upload(encode(solid((0, 255, 255, 0), mode="CMYK"), fmt))
    assert upload.original_mode == "CMYK"
    np.testing.assert_allclose(upload.rgb[32, 32], RED, atol=3)
    assert any("CMYK" in note for note in upload.notes)


# ---------------------------------------------------------------- EXIF orientation


def marked_jpeg(orientation: int) -> bytes:
    """120 x 80 (w x h) grey JPEG, red block in the stored top-left corner, EXIF tag set."""
    image = Image.new("RGB", (120, 80), (128, 128, 128))
    image.paste(RED, (0, 0, 24, 24))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", exif=exif, quality=95)


def is_red(patch: np.ndarray) -> bool:
    r, g, b = patch.reshape(-1, 3).mean(axis=0)
    return r > 200 and g < 60 and b < 60


@pytest.mark.parametrize(
    "orientation, corner",
    [
        (6, (slice(0, 16), slice(-16, None))),  # rotate 90 clockwise: top-left -> top-right
        (8, (slice(-16, None), slice(0, 16))),  # rotate 90 anticlockwise: -> bottom-left
    ],
)
def test_exif_orientation_is_applied(orientation, corner):
    upload = read_upload(marked_jpeg(orientation))
    assert upload.original_size == (120, 80)
    assert upload.rgb.shape == (120, 80, 3)  # height and width swapped
    assert is_red(upload.rgb[corner])
    assert not is_red(upload.rgb[:16, :16])  # the stored corner has moved
    assert "rotated per EXIF orientation" in upload.notes


def jpeg_with_raw_exif(entries: list[tuple[int, int, bytes]]) -> bytes:
    """The grey 120 x 80 JPEG of `marked_jpeg` with a hand-made EXIF block: one IFD of
    (tag, TIFF type, 4-byte value) entries, count 1 each, little-endian."""
    image = Image.new("RGB", (120, 80), (128, 128, 128))
    image.paste(RED, (0, 0, 24, 24))
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", tag, kind, 1) + value.ljust(4, b"\0") for tag, kind, value in entries
    )
    exif = b"Exif\0\0" + b"II*\0" + struct.pack("<I", 8) + ifd + struct.pack("<I", 0)
    return encode(image, "JPEG", exif=exif, quality=95)


def test_orientation_is_applied_when_other_exif_tags_are_malformed():
    # Found by the intake fuzz test: an ImageDescription (an ASCII tag) stored as a FLOAT
    # beside orientation 8 made `ImageOps.exif_transpose` raise AttributeError while it
    # rewrote the EXIF block, and the upload was refused as "damaged".
    data = jpeg_with_raw_exif([(0x010E, 11, struct.pack("<f", 8.4e-45)), (0x0112, 3, struct.pack("<H", 8))])
    upload = read_upload(data)
    assert upload.rgb.shape == (120, 80, 3)
    assert is_red(upload.rgb[-16:, :16])  # rotated 90 anticlockwise, as for a clean tag
    assert "rotated per EXIF orientation" in upload.notes


@pytest.mark.parametrize(
    "orientation, upright",
    [
        (2, np.fliplr),
        (3, lambda a: np.rot90(a, 2)),
        (4, np.flipud),
        (5, lambda a: np.transpose(a, (1, 0, 2))),
        (6, lambda a: np.rot90(a, -1)),
        (7, lambda a: np.rot90(np.transpose(a, (1, 0, 2)), 2)),
        (8, np.rot90),
    ],
)
def test_every_exif_orientation_matches_the_standard_transform(orientation, upright):
    stored = read_upload(marked_jpeg(1)).rgb
    turned = read_upload(marked_jpeg(orientation)).rgb
    np.testing.assert_array_equal(turned, upright(stored))


def test_upright_exif_leaves_image_alone():
    upload = read_upload(marked_jpeg(1))
    assert upload.rgb.shape == (80, 120, 3) and is_red(upload.rgb[:16, :16])
    assert upload.notes == ()


# ---------------------------------------------------------------- refusals


@pytest.mark.parametrize("data", [b"", None, bytearray()])
def test_empty_input_is_refused(data):
    assert_refused(data, "empty")


def test_random_bytes_are_not_an_image():
    data = np.random.default_rng(1).bytes(4096)
    assert_refused(data, "not an image we can read", "JPEG, PNG, WebP, BMP, TIFF")


def test_text_file_is_not_an_image():
    assert_refused(b"patient notes: mole on left arm\n" * 20, "not an image we can read")


def test_formats_outside_the_list_are_refused():
    # Pillow reads PPM, but uploads are held to the formats the app promises.
    assert_refused(encode(texture(), "PPM"), "not an image we can read")


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_jpeg_is_refused(cut):
    data = encode(texture(128, 128), "JPEG")
    assert_refused(data[: int(len(data) * cut)], "damaged or incomplete")


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_truncated_png_is_refused(cut):
    data = encode(texture(128, 128), "PNG")
    assert_refused(data[: int(len(data) * cut)], "damaged or incomplete")


def test_png_with_corrupt_checksum_is_refused():
    data = bytearray(encode(texture(128, 128), "PNG"))
    data[len(data) // 2] ^= 0xFF
    assert_refused(bytes(data), "damaged or incomplete")


def test_too_small_image_is_refused_with_sizes():
    assert_refused(encode(texture(100, 40), "PNG"), "100 x 40", "at least 64")


def test_min_side_is_configurable():
    assert read_upload(encode(texture(40, 40), "PNG"), min_side=32).rgb.shape == (40, 40, 3)


def test_byte_limit_is_checked_first_and_stated_in_mb():
    assert_refused(b"\xff\xd8" + b"\0" * MAX_BYTES, "20.0 MB", "20 MB limit")


def test_byte_limit_is_configurable():
    data = encode(texture(128, 128), "PNG")
    assert_refused(data, "MB", max_bytes=len(data) - 1)
    assert read_upload(data, max_bytes=len(data)).rgb.shape == (128, 128, 3)


def test_pixel_bomb_header_is_refused_quickly():
    bomb = patch_png_size(encode(Image.new("1", (64, 64)), "PNG"), 30000, 30000)
    start = time.perf_counter()
    message = assert_refused(bomb, "megapixel")
    assert time.perf_counter() - start < 1.0
    assert "damaged" not in message  # refused for its size, before decoding


def test_pixel_limit_uses_the_header_size():
    # 63 megapixels: above our limit, below Pillow's own warning level.
    bomb = patch_png_size(encode(Image.new("1", (64, 64)), "PNG"), 9000, 7000)
    assert_refused(bomb, "9000 x 7000", "40 megapixel limit")


def test_pixel_limit_is_configurable():
    assert_refused(encode(texture(100, 100), "PNG"), "100 x 100", max_pixels=5000)


def test_non_bytes_argument_is_a_programming_error():
    with pytest.raises(TypeError):
        read_upload("photo.jpg")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF"])
def test_corrupted_bytes_never_raise_anything_but_intake_error(fmt):
    rng = np.random.default_rng(7)
    original = encode(texture(64, 64), fmt)
    for _ in range(25):
        data = bytearray(original)
        for position in rng.integers(0, len(data), size=rng.integers(1, 8)):
            data[position] = rng.integers(0, 256)
        data = bytes(data[: rng.integers(1, len(data) + 1)])
        try:
            upload = read_upload(data)
        except IntakeError:
            continue
        assert upload.rgb.dtype == np.uint8 and upload.rgb.ndim == 3
