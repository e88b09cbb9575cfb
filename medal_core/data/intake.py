"""Uploaded bytes in, a clean 8-bit RGB array out, or a refusal a person can act on.

`read_upload` is the single gate between a user's file and the rest of the app:

* only JPEG, PNG, WebP, BMP, TIFF and GIF are parsed (Pillow is told so, so that no
  other decoder, e.g. PostScript via Ghostscript, is ever reached from an upload);
* sizes are checked from the header *before* any pixel is decoded (decompression
  bombs), independently of Pillow's global `Image.MAX_IMAGE_PIXELS`;
* truncated or corrupt files are refused rather than padded
  (`ImageFile.LOAD_TRUNCATED_IMAGES` is left alone and must stay False), and so are
  files padded out with more than `MAX_SEGMENTS` empty chunks or segments, which
  Pillow would walk one by one;
* EXIF orientation is applied and every mode is reduced to (h, w, 3) uint8 RGB:
  transparency is composited on mid-grey, high bit depths are scaled (not clipped);
* everything happens in memory; nothing is written to disk.

Every failure becomes an `IntakeError` whose message says what was wrong and what to
do; no raw decoder exception escapes for any byte input.

The resize to the model's input size is not done here: see
`medal_core.data.datasets.resize_for_model`.
"""

from __future__ import annotations

import io
import re
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, UnidentifiedImageError

# Phone photos are typically 2-8 MB as JPEG and dermatoscope exports rarely exceed
# 10 MB; 20 MB leaves room for an uncompressed 12 MP PNG while keeping a hostile or
# accidental upload (a video, a RAW file) from tying up the server.
MAX_BYTES = 20 * 1024 * 1024

# 40 megapixels covers 12-36 MP cameras and 40 MP phone modes; a decoded image of that
# size needs at most ~160 MB (RGBA) plus the 120 MB RGB result, which a small server
# can afford. Larger (48-200 MP "full resolution" phone modes) must be exported at the
# phone's normal size. Note Pillow itself refuses above ~89 MP (`MAX_IMAGE_PIXELS`),
# so raising this limit beyond that has no effect.
MAX_PIXELS = 40_000_000

# Below 64 px on a side there is too little detail for the model (input 256 px) to
# see anything; smaller images are refused outright, 64-223 px only get a quality
# warning (see `medal_core.screening.quality`).
MIN_SIDE = 64

# Decoders Pillow may use for an upload. The JPEG decoder also opens the multi-picture
# JPEGs many cameras write, which Pillow names "MPO"; they are reported as "JPEG".
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
SUPPORTED_TEXT = "JPEG, PNG, WebP, BMP, TIFF"

# Transparent areas are filled with a neutral grey: black or white would look like a
# dark lesion or an overexposed patch to the model and to the quality checks.
TRANSPARENT_FILL = (128, 128, 128)

# Pillow walks PNG chunks, JPEG header segments and GIF blocks one by one in Python:
# a 19 MB file made of nothing but empty chunks or segments took 5-11 s to read (a
# real 19 MB PNG: 0.1 s), and one of empty JPEG APP segments or 1-byte GIF comment
# blocks up to +600/+800 MB, as Pillow keeps each in a list. Real files have a few
# dozen (a 20 MB PNG in libpng's 8 kB IDAT chunks ~2,600); above this many the file
# is refused as damaged, before Pillow sees it (~0.4 s of parsing at most).
MAX_SEGMENTS = 50_000

_MEGABYTE = 1024 * 1024

# Everything a Pillow decoder is known to raise on hostile or damaged input.
_DECODER_ERRORS = (
    OSError,
    ValueError,
    SyntaxError,
    struct.error,
    EOFError,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    OverflowError,
    zlib.error,
)

_ORIENTATION_TAG = ExifTags.Base.Orientation

_DEPTH_WORDS = {
    "I;16": "16-bit",
    "I;16L": "16-bit",
    "I;16B": "16-bit",
    "I;16N": "16-bit",
    "I": "32-bit",
    "F": "floating-point",
}


class IntakeError(ValueError):
    """Refusal with a message a non-technical user can act on."""


@dataclass(frozen=True)
class UploadedImage:
    """An accepted upload.

    rgb: (h, w, 3) uint8 RGB, EXIF orientation applied, read-only (copy to edit).
    format: the container format, e.g. "JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF".
    original_size: (width, height) in pixels as stored in the file, before rotation.
    original_mode: Pillow mode of the file, e.g. "RGB", "RGBA", "I;16", "CMYK", "P".
    notes: what was done to the image, in plain words, for display to the user.
    """

    rgb: np.ndarray
    format: str
    original_size: tuple[int, int]
    original_mode: str
    notes: tuple[str, ...]


def read_upload(
    data: bytes | bytearray | memoryview | None,
    *,
    max_bytes: int = MAX_BYTES,
    max_pixels: int = MAX_PIXELS,
    min_side: int = MIN_SIDE,
) -> UploadedImage:
    """Decode uploaded file bytes into an `UploadedImage`, or raise `IntakeError`.

    Limits: `max_bytes` on the file size, `max_pixels` on width*height (checked from
    the header, before decoding), `min_side` on the shorter side, all in pixels/bytes.
    Only the first frame of multi-frame files (TIFF, animated GIF/PNG/WebP) is used.
    """
    if data is not None and not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"read_upload expects the file's bytes, not {type(data).__name__}")
    if data is None or len(data) == 0:
        raise IntakeError("The file is empty. Please choose the photo again and re-upload it.")
    if len(data) > max_bytes:
        raise IntakeError(
            f"The file is {len(data) / _MEGABYTE:.1f} MB, above the {max_bytes / _MEGABYTE:.0f} MB "
            "limit. Please upload a smaller photo (for example the phone's normal-size "
            "photo, or a JPEG export)."
        )
    try:
        # Pillow warns, then errors, on images above its own pixel limits; both become
        # refusals here. The filters apply to this block only (in other threads a
        # concurrent change of filters can at worst let such a warning through as a
        # warning: the header check below refuses the image all the same).
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            # Damaged metadata that Pillow skips over (it still decodes the pixels) is
            # not the user's concern and would only clutter the server log.
            warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.")
            return _decode(bytes(data), max_pixels=max_pixels, min_side=min_side)
    except IntakeError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as error:
        raise IntakeError(
            f"The image has too many pixels to process safely (limit {max_pixels / 1e6:.0f} "
            "megapixels). Please upload a smaller photo."
        ) from error
    except UnidentifiedImageError as error:
        raise _not_an_image() from error
    except MemoryError as error:
        raise IntakeError(
            "The image is too large to process on this server. Please upload a smaller photo."
        ) from error
    except _DECODER_ERRORS as error:
        raise _damaged() from error
    except Exception as error:  # noqa: BLE001 - any decoder failure is the file's fault
        raise _damaged() from error


def _not_an_image() -> IntakeError:
    return IntakeError(
        f"This file is not an image we can read (supported: {SUPPORTED_TEXT}). "
        "Please upload a photo in one of these formats."
    )


def _damaged() -> IntakeError:
    return IntakeError(
        "The image file is damaged or incomplete and cannot be read. Please upload it "
        "again, or export the photo again from its original source."
    )


def _decode(data: bytes, *, max_pixels: int, min_side: int) -> UploadedImage:
    """Open, check the header, decode the first frame and reduce it to RGB."""
    if _segment_count(data, MAX_SEGMENTS) > MAX_SEGMENTS:
        raise _damaged()
    with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
        width, height = image.size
        _check_dimensions(width, height, max_pixels=max_pixels, min_side=min_side)
        if image.format == "PNG":
            _verify_png_chunks(data)
        original_mode = image.mode
        file_format = "JPEG" if image.format == "MPO" else str(image.format)
        notes: list[str] = []
        if getattr(image, "is_animated", False):
            # A camera's MPO keeps previews or depth maps after the photo: nothing to
            # tell the user about.
            if image.format != "MPO":
                notes.append("only the first frame of the animation or multi-page file was used")
            image.seek(0)
        image.load()
        upright, rotation_note = _apply_exif_orientation(image)
        if rotation_note:
            notes.append(rotation_note)
        rgb, conversion_notes = _to_rgb_uint8(upright)
        notes.extend(conversion_notes)
    rgb.flags.writeable = False
    return UploadedImage(
        rgb=rgb,
        format=file_format,
        original_size=(width, height),
        original_mode=original_mode,
        notes=tuple(notes),
    )


def _check_dimensions(width: int, height: int, *, max_pixels: int, min_side: int) -> None:
    """Refuse sizes from the header alone, before any pixel is decoded."""
    if width * height > max_pixels:
        raise IntakeError(
            f"The image is {width} x {height} pixels ({width * height / 1e6:.0f} megapixels), "
            f"above the {max_pixels / 1e6:.0f} megapixel limit. Please upload a smaller "
            "photo (the phone's normal photo size is fine)."
        )
    if min(width, height) < min_side:
        raise IntakeError(
            f"The image is only {width} x {height} pixels; it must be at least {min_side} "
            f"pixels on each side. Please upload the original photo, not a thumbnail."
        )


def _segment_count(data: bytes, limit: int) -> int:
    """How many pieces Pillow's Python parser would walk through in a PNG (chunks),
    JPEG (segments, fill and junk bytes before the first scan) or GIF (extensions and
    sub-blocks shorter than 64 bytes up to the second image); counting stops just
    above `limit`. 0 for other formats. Reads lengths only."""
    end = len(data)
    count = 0
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        position = 8
        while position + 8 <= end and count <= limit and data[position + 4 : position + 8] != b"IEND":
            count += 1
            position += 12 + int.from_bytes(data[position : position + 4], "big")
    elif data.startswith(b"\xff\xd8"):
        position = 2
        while position + 1 < end and count <= limit:
            junk = _NOT_FF.match(data, position)
            if junk:  # Pillow skips these a byte at a time
                count += junk.end() - position
                position = junk.end()
                continue
            fill = _FF_RUN.match(data, position)
            assert fill is not None  # `junk` did not match, so data[position] is 0xFF
            fill_end = fill.end()
            count += fill_end - position  # each 0xFF: one turn of Pillow's loop
            position = fill_end - 1  # the last 0xFF starts the marker
            marker = data[position + 1] if position + 1 < end else 0xDA
            if marker == 0xDA:  # start of scan: Pillow's parsing ends
                break
            if marker in (0x00, 0x01) or 0xD0 <= marker <= 0xD9:
                position += 2
            else:
                position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    elif data[:6] in (b"GIF87a", b"GIF89a") and end >= 13:
        position = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
        images = 0
        while position < end and count <= limit:
            if data[position] == 0x21:  # extension: introducer, label, sub-blocks
                count += 1
                position += 2
            elif data[position] == 0x2C and images == 0 and position + 10 < end:
                images += 1
                flags = data[position + 9]
                position += 11 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
            else:  # second image, trailer or junk: Pillow stops here for frame 0
                break
            while position < end and count <= limit:
                size = data[position]
                position += 1 + size
                if size == 0:
                    break
                count += size < 64
    return count


_NOT_FF = re.compile(rb"[^\xff]+")
_FF_RUN = re.compile(rb"\xff+")


def _verify_png_chunks(data: bytes) -> None:
    """Check every PNG chunk's checksum and that the file ends properly.

    Pillow's decoder stops once it has the pixels, so a PNG cut off in its last chunk
    or with flipped bits in a checksum would otherwise pass; `verify` reads the chunk
    structure (no pixel decoding) and raises on either.
    """
    with Image.open(io.BytesIO(data), formats=("PNG",)) as image:
        image.verify()


# EXIF orientation value -> the transpose that makes the image upright (EXIF 2.3, 4.6.4).
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def exif_orientation(image: Image.Image) -> int | None:
    """The EXIF orientation tag (1-8), 1 when absent, None when the EXIF is unreadable."""
    try:
        orientation = image.getexif().get(_ORIENTATION_TAG, 1)
    except Exception:  # noqa: BLE001 - malformed EXIF raises anything from Pillow's parser
        return None
    return orientation if isinstance(orientation, int) else None


def _apply_exif_orientation(image: Image.Image) -> tuple[Image.Image, str]:
    """Rotate/flip as the EXIF orientation tag says; returns the image and a note.

    Only the pixels are turned. `ImageOps.exif_transpose` also rewrites the EXIF and XMP
    blocks to drop the tag, and that rewrite raises (e.g. AttributeError) on some
    malformed blocks, which cost users their upload; the app never uses the metadata
    again, so it is not rewritten. A malformed EXIF block keeps the image as stored,
    with a note saying so.
    """
    orientation = exif_orientation(image)
    if orientation is None:
        return image, "orientation information was unreadable; the image is shown as stored"
    method = _ORIENTATION_TRANSPOSE.get(orientation)
    if method is None:
        return image, ""  # upright already (1, or a value outside the standard)
    return image.transpose(method), "rotated per EXIF orientation"


def _to_rgb_uint8(image: Image.Image) -> tuple[np.ndarray, list[str]]:
    """Any Pillow mode to (h, w, 3) uint8 RGB, with notes on what was changed."""
    mode = image.mode
    if mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        return _high_depth_to_rgb(image)
    if mode == "RGB" and "transparency" not in image.info:
        return np.asarray(image), []

    notes: list[str] = []
    has_alpha = "A" in mode or "a" in mode or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        lowest_alpha, _ = rgba.getchannel("A").getextrema()
        if lowest_alpha < 255:  # type: ignore[operator]  # one channel: (min, max) ints
            background = Image.new("RGBA", rgba.size, (*TRANSPARENT_FILL, 255))
            rgba = Image.alpha_composite(background, rgba)
            notes.append("transparent areas filled with grey")
        rgb_image = rgba.convert("RGB")
    elif mode == "CMYK":
        rgb_image = image.convert("RGB")
        notes.append("converted from CMYK (print) colours to RGB; colours may be approximate")
    else:
        try:
            rgb_image = image.convert("RGB")
        except ValueError as error:
            raise IntakeError(
                f"The image uses a colour format ({mode}) we cannot convert. Please save it "
                "as an ordinary RGB JPEG or PNG and upload it again."
            ) from error
    if mode in ("L", "1", "LA", "La"):
        notes.append("black-and-white image shown in colour format")
    return np.asarray(rgb_image), notes


def _high_depth_to_rgb(image: Image.Image) -> tuple[np.ndarray, list[str]]:
    """16-bit, 32-bit integer or float greyscale to RGB by scaling its value range.

    The range actually present (lowest to highest finite value) is mapped linearly to
    0-255, so a 16-bit image neither comes out white (clipping at 255) nor black (a
    12-bit image read as 16-bit). Pixels without a value (NaN, inf) are shown black; an
    image with no finite value at all is refused.
    """
    raw = np.asarray(image)
    finite = np.isfinite(raw) if raw.dtype.kind == "f" else np.ones(raw.shape, dtype=bool)
    notes: list[str] = []
    if not finite.all():
        if not finite.any():
            raise IntakeError(
                "The image contains no valid pixel values (it may be a data file rather "
                "than a photo). Please upload an ordinary JPEG or PNG photo."
            )
        notes.append(f"{int((~finite).sum())} pixels had no value and are shown black")
    lowest = float(raw[finite].min())
    highest = float(raw[finite].max())
    if highest > lowest:
        # In float64, shift then scale: a float32 image spanning +-3e38 has a range of
        # 6e38, and one whose values differ by less than ~1e-36 (denormals) a scale
        # above float32's maximum; float64 holds both, so no inf or NaN can arise
        # (computed in float32 they did, and NaN cast to uint8 is undefined). Missing
        # values sit at the lowest level, i.e. black.
        scale = 255.0 / (highest - lowest)
        values = np.where(finite, raw, lowest).astype(np.float64)
        values -= lowest
        values *= scale
        grey = np.clip(np.rint(values, out=values), 0, 255, out=values).astype(np.uint8)
        notes.append(
            f"{_DEPTH_WORDS.get(image.mode, image.mode)} image scaled from its "
            f"value range {lowest:g}-{highest:g} to 8 bits"
        )
    else:
        # A flat image has no contrast to stretch; mid-grey says "no information".
        grey = np.where(finite, 128, 0).astype(np.uint8)
        notes.append("image has a single value everywhere; shown as flat grey")
    transparency = image.info.get("transparency")
    if isinstance(transparency, (int, float)) and not isinstance(transparency, bool):
        transparent = np.asarray(image) == transparency
        if transparent.any():
            grey = np.where(transparent, TRANSPARENT_FILL[0], grey).astype(np.uint8)
            notes.append("transparent areas filled with grey")
    notes.append("black-and-white image shown in colour format")
    return np.repeat(grey[:, :, np.newaxis], 3, axis=2), notes
