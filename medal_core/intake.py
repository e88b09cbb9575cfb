"""Uploaded bytes in, a clean 8-bit RGB array out, or a refusal a person can act on.

`read_upload` is the single gate between a user's file and the rest of the app:

* only JPEG, PNG, WebP, BMP, TIFF and GIF are parsed (Pillow is told so, so that no
  other decoder, e.g. PostScript via Ghostscript, is ever reached from an upload);
* sizes are checked from the header *before* any pixel is decoded (decompression
  bombs), independently of Pillow's global `Image.MAX_IMAGE_PIXELS`;
* truncated or corrupt files are refused rather than padded
  (`ImageFile.LOAD_TRUNCATED_IMAGES` is left alone and must stay False);
* EXIF orientation is applied and every mode is reduced to (h, w, 3) uint8 RGB:
  transparency is composited on mid-grey, high bit depths are scaled (not clipped);
* everything happens in memory; nothing is written to disk.

Every failure becomes an `IntakeError` whose message says what was wrong and what to
do; no raw decoder exception escapes for any byte input.

The resize to the model's input size is not done here: see
`medal_core.data.resize_for_model`.
"""

from __future__ import annotations

import io
import struct
import warnings
import zlib
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

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
# warning (see `medal_core.quality`).
MIN_SIDE = 64

# Decoders Pillow may use for an upload. The JPEG decoder also opens the multi-picture
# JPEGs many cameras write, which Pillow names "MPO"; they are reported as "JPEG".
ACCEPTED_FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")
SUPPORTED_TEXT = "JPEG, PNG, WebP, BMP, TIFF"

# Transparent areas are filled with a neutral grey: black or white would look like a
# dark lesion or an overexposed patch to the model and to the quality checks.
TRANSPARENT_FILL = (128, 128, 128)

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

_DEPTH_WORDS = {"I;16": "16-bit", "I;16L": "16-bit", "I;16B": "16-bit", "I;16N": "16-bit",
                "I": "32-bit", "F": "floating-point"}


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


def read_upload(data: bytes | bytearray | memoryview | None, *,
                max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS,
                min_side: int = MIN_SIDE) -> UploadedImage:
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
            "photo, or a JPEG export).")
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
            "megapixels). Please upload a smaller photo.") from error
    except UnidentifiedImageError as error:
        raise _not_an_image() from error
    except MemoryError as error:
        raise IntakeError(
            "The image is too large to process on this server. Please upload a smaller "
            "photo.") from error
    except _DECODER_ERRORS as error:
        raise _damaged() from error
    except Exception as error:  # noqa: BLE001 - any decoder failure is the file's fault
        raise _damaged() from error


def _not_an_image() -> IntakeError:
    return IntakeError(
        f"This file is not an image we can read (supported: {SUPPORTED_TEXT}). "
        "Please upload a photo in one of these formats.")


def _damaged() -> IntakeError:
    return IntakeError(
        "The image file is damaged or incomplete and cannot be read. Please upload it "
        "again, or export the photo again from its original source.")


def _decode(data: bytes, *, max_pixels: int, min_side: int) -> UploadedImage:
    """Open, check the header, decode the first frame and reduce it to RGB."""
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
                notes.append("only the first frame of the animation or multi-page file "
                             "was used")
            image.seek(0)
        image.load()
        image, rotation_note = _apply_exif_orientation(image)
        if rotation_note:
            notes.append(rotation_note)
        rgb, conversion_notes = _to_rgb_uint8(image)
        notes.extend(conversion_notes)
    rgb.flags.writeable = False
    return UploadedImage(rgb=rgb, format=file_format, original_size=(width, height),
                         original_mode=original_mode, notes=tuple(notes))


def _check_dimensions(width: int, height: int, *, max_pixels: int, min_side: int) -> None:
    """Refuse sizes from the header alone, before any pixel is decoded."""
    if width * height > max_pixels:
        raise IntakeError(
            f"The image is {width} x {height} pixels ({width * height / 1e6:.0f} megapixels), "
            f"above the {max_pixels / 1e6:.0f} megapixel limit. Please upload a smaller "
            "photo (the phone's normal photo size is fine).")
    if min(width, height) < min_side:
        raise IntakeError(
            f"The image is only {width} x {height} pixels; it must be at least {min_side} "
            f"pixels on each side. Please upload the original photo, not a thumbnail.")


def _verify_png_chunks(data: bytes) -> None:
    """Check every PNG chunk's checksum and that the file ends properly.

    Pillow's decoder stops once it has the pixels, so a PNG cut off in its last chunk
    or with flipped bits in a checksum would otherwise pass; `verify` reads the chunk
    structure (no pixel decoding) and raises on either.
    """
    with Image.open(io.BytesIO(data), formats=("PNG",)) as image:
        image.verify()


def _apply_exif_orientation(image: Image.Image) -> tuple[Image.Image, str]:
    """Rotate/flip as the EXIF orientation tag says; returns the image and a note.

    A malformed EXIF block must not cost the user their upload: the image is then kept
    as stored, with a note saying so.
    """
    try:
        orientation = image.getexif().get(_ORIENTATION_TAG, 1)
        if orientation not in (2, 3, 4, 5, 6, 7, 8):
            return image, ""  # upright already; exif_transpose would only copy it
        return ImageOps.exif_transpose(image), "rotated per EXIF orientation"
    except _DECODER_ERRORS:
        return image, "orientation information was unreadable; the image is shown as stored"


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
        if rgba.getextrema()[3][0] < 255:
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
                "as an ordinary RGB JPEG or PNG and upload it again.") from error
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
                "than a photo). Please upload an ordinary JPEG or PNG photo.")
        notes.append(f"{int((~finite).sum())} pixels had no value and are shown black")
    lowest = float(raw[finite].min())
    highest = float(raw[finite].max())
    if highest > lowest:
        # Scale first, then shift: with the scale <= 255 / range nothing can overflow
        # float32, even for float images spanning +-3e38. Missing values sit at the
        # lowest level, i.e. black.
        scale = 255.0 / (highest - lowest)
        values = np.where(finite, raw, lowest).astype(np.float32)
        grey = np.clip(np.rint(values * scale - lowest * scale), 0, 255).astype(np.uint8)
        notes.append(f"{_DEPTH_WORDS.get(image.mode, image.mode)} image scaled from its "
                     f"value range {lowest:g}-{highest:g} to 8 bits")
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
