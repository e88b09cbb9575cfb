"""Hostile, damaged and odd image files for fuzzing `medal_core.data.intake.read_upload`.

A plain module of small functions, shared by `tests/test_fuzz_intake.py` (Hypothesis
properties) and `bench/fuzz_intake.py` (the long fuzz run). Nothing here is part of the
app. Every function returns the bytes of a file (or a list of labelled files); none of
them writes to disk.

* `seed_images()` — small valid files of every accepted format and many modes;
* `mutate(data, rng)` — one random damage: truncate, bit flips, byte set/insert/delete,
  chunk shuffle/duplicate, header patch (random bytes or a random declared size);
* `bomb_*` — tiny files declaring huge pixel counts (PNG, JPEG, TIFF, BMP, GIF, WebP),
  and `bomb_png_deflate`, a real PNG whose zeros compress ~1000:1;
* `extreme_aspect`, `tiny_image` — 1x1, just below/at `MIN_SIDE`, 64 x 20000 strips;
* `huge_exif_jpeg`, `exif_with_orientation`, `malformed_exif_jpeg` — EXIF edge cases;
* `multi_frame` — animated GIF/PNG/WebP, multi-page TIFF, MPO, odd first frames;
* `nan_tiff`, `float64_tiff`, `flat_image`, `extreme_int_tiff` — NaN/inf, denormals,
  constant and all-zero images in high bit depths;
* `segment_flood` — files padded with ~10^4-10^6 empty chunks/segments/sub-blocks;
* `odd_containers` — other formats' magic numbers, PNG text/chunk bombs, IFD loops.

`CASE_FAMILIES` maps a family name to `f(rng) -> (detail, data)`, drawing one case;
`rng` is a `random.Random` (Hypothesis' `st.randoms()` gives one too).
"""

from __future__ import annotations

import io
import random
import re
import struct
import zlib
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

FORMATS = ("JPEG", "PNG", "WEBP", "BMP", "TIFF", "GIF")

# ---------------------------------------------------------------- refusal messages

# Every refusal `read_upload` can give, by family (a regex on the message's start).
# A refusal matching none of them is a new message: the fuzzers report it as such.
MESSAGE_FAMILIES = (
    ("empty", r"The file is empty\."),
    ("too_many_bytes", r"The file is [\d.]+ MB, above the \d+ MB limit"),
    ("too_many_pixels", r"The image has too many pixels to process safely"),
    ("above_pixel_limit", r"The image is \d+ x \d+ pixels \(\d+ megapixels\), above the"),
    ("too_small", r"The image is only \d+ x \d+ pixels"),
    ("not_an_image", r"This file is not an image we can read"),
    ("damaged", r"The image file is damaged or incomplete"),
    ("out_of_memory", r"The image is too large to process on this server"),
    ("colour_format", r"The image uses a colour format \(.*\) we cannot convert"),
    ("no_valid_pixels", r"The image contains no valid pixel values"),
)

# The families that mean "refused for its size" (a decompression bomb's answer).
SIZE_FAMILIES = ("too_many_pixels", "above_pixel_limit")


def message_family(message: str) -> str | None:
    """The family name of an intake refusal message, or None for an unknown one."""
    for name, pattern in MESSAGE_FAMILIES:
        if re.match(pattern, message):
            return name
    return None


# ---------------------------------------------------------------- basic encoders


def encode(image: Image.Image, fmt: str, **options) -> bytes:
    """The bytes `image.save` writes for `fmt`. (A copy is saved: Pillow's JPEG writer
    leaves its settings on the image it saved, and a later TIFF save then fails.)"""
    buffer = io.BytesIO()
    image.copy().save(buffer, fmt, **options)
    return buffer.getvalue()


def texture(width: int = 72, height: int = 64, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """Seeded noise of width x height pixels, converted to `mode`."""
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    return image if mode == "RGB" else image.convert(mode)


def pattern(width: int, height: int, mode: str = "RGB") -> Image.Image:
    """A cheap deterministic diagonal pattern (fast to make at any size)."""
    row = (np.arange(width, dtype=np.uint32) * 7) % 256
    col = (np.arange(height, dtype=np.uint32) * 3) % 256
    grey = ((row[np.newaxis, :] + col[:, np.newaxis]) % 256).astype(np.uint8)
    image = Image.fromarray(grey, "L")
    return image if mode == "L" else image.convert(mode)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk with its length and CRC."""
    return (
        struct.pack(">I", len(payload))
        + kind
        + payload
        + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)
    )


def png_from_rows(
    width: int,
    height: int,
    row: bytes,
    *,
    bit_depth: int = 8,
    colour_type: int = 0,
    extra_chunks: tuple[bytes, ...] = (),
    level: int = 9,
) -> bytes:
    """A valid PNG whose every scanline is `row` (filter byte 0 is prepended), built by
    streaming zlib, so that huge images cost no memory to make."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    compressor = zlib.compressobj(level)
    line = b"\0" + row
    rows_per_block = max(1, (1 << 20) // len(line))
    block = line * rows_per_block
    parts = []
    done = 0
    while done < height:
        count = min(rows_per_block, height - done)
        parts.append(compressor.compress(block if count == rows_per_block else line * count))
        done += count
    parts.append(compressor.flush())
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + b"".join(extra_chunks)
        + png_chunk(b"IDAT", b"".join(parts))
        + png_chunk(b"IEND", b"")
    )


def tiff_from_raw(
    width: int,
    height: int,
    raw: bytes,
    *,
    bits: int = 8,
    sample_format: int = 1,
    photometric: int = 1,
    samples: int = 1,
    extra_tags: dict[int, tuple[int, int]] | None = None,
) -> bytes:
    """A minimal little-endian, uncompressed, single-strip TIFF around `raw`.

    `sample_format`: 1 unsigned, 2 signed, 3 IEEE float. `extra_tags`: tag -> (type,
    value) for single-valued SHORT (3) / LONG (4) tags. Width and height are LONG, so
    any declared size fits.
    """
    tags: dict[int, tuple[int, int, int]] = {  # tag -> (type, count, value)
        256: (4, 1, width),
        257: (4, 1, height),
        258: (3, 1, bits),
        259: (3, 1, 1),
        262: (3, 1, photometric),
        273: (4, 1, 0),
        277: (3, 1, samples),
        278: (4, 1, max(height, 1)),
        279: (4, 1, len(raw)),
        339: (3, 1, sample_format),
    }
    for tag, (kind, value) in (extra_tags or {}).items():
        tags[tag] = (kind, 1, value)
    entries = sorted(tags.items())
    ifd_size = 2 + 12 * len(entries) + 4
    data_offset = 8 + ifd_size
    ifd = struct.pack("<H", len(entries))
    for tag, (kind, count, value) in entries:
        if tag == 273:
            value = data_offset
        packed = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
        ifd += struct.pack("<HHI", tag, kind, count) + packed
    ifd += struct.pack("<I", 0)
    return b"II*\0" + struct.pack("<I", 8) + ifd + raw


# ---------------------------------------------------------------- valid seeds


@lru_cache(maxsize=1)
def _seed_images() -> tuple[tuple[str, bytes], ...]:
    rgb = texture(72, 64, seed=1)

    def red():  # a fresh image per save: Pillow's JPEG/MPO writer leaves its settings
        return Image.new("RGB", (64, 64), (255, 0, 0))  # on the image it saved

    def blue():
        return Image.new("RGB", (64, 64), (0, 0, 255))

    exif = Image.Exif()
    exif[0x0112] = 6
    palette = Image.new("P", (64, 64), 0)
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    palette.paste(1, (32, 0, 64, 64))
    ramp16 = Image.fromarray(np.tile(np.linspace(0, 65535, 64).astype(np.uint16), (64, 1)))
    ramp_f = Image.fromarray(np.tile(np.linspace(-1, 1, 64, dtype=np.float32), (64, 1)))
    rgba = texture(64, 64, seed=2, mode="RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.arange(0, 256, 4, dtype=np.uint8), (64, 1))))
    seeds = {
        "jpeg": encode(rgb, "JPEG", quality=90),
        "jpeg_progressive": encode(rgb, "JPEG", progressive=True, quality=80),
        "jpeg_exif_rot6": encode(rgb, "JPEG", exif=exif),
        "jpeg_grey": encode(rgb.convert("L"), "JPEG"),
        "jpeg_cmyk": encode(rgb.convert("CMYK"), "JPEG"),
        "mpo": encode(red(), "MPO", save_all=True, append_images=[blue()]),
        "png": encode(rgb, "PNG"),
        "png_rgba": encode(rgba, "PNG"),
        "png_palette_trns": encode(palette, "PNG", transparency=1),
        "png_grey": encode(rgb.convert("L"), "PNG"),
        "png_1bit": encode(rgb.convert("1"), "PNG"),
        "png_16bit": encode(ramp16, "PNG"),
        "png_optimized": encode(rgb, "PNG", optimize=True),
        "apng": encode(red(), "PNG", save_all=True, append_images=[blue()], duration=100),
        "webp_lossy": encode(rgb, "WEBP", quality=80),
        "webp_lossless": encode(rgb, "WEBP", lossless=True),
        "webp_alpha": encode(rgba, "WEBP", lossless=True),
        "webp_animated": encode(red(), "WEBP", save_all=True, append_images=[blue()], duration=100),
        "bmp": encode(rgb, "BMP"),
        "bmp_palette": encode(palette, "BMP"),
        "bmp_1bit": encode(rgb.convert("1"), "BMP"),
        "tiff": encode(rgb, "TIFF"),
        "tiff_lzw": encode(rgb, "TIFF", compression="tiff_lzw"),
        "tiff_deflate": encode(rgb, "TIFF", compression="tiff_adobe_deflate"),
        "tiff_jpeg": encode(rgb, "TIFF", compression="jpeg"),
        "tiff_packbits": encode(rgb, "TIFF", compression="packbits"),
        "tiff_16bit": encode(ramp16, "TIFF"),
        "tiff_float": encode(ramp_f, "TIFF"),
        "tiff_cmyk": encode(rgb.convert("CMYK"), "TIFF"),
        "tiff_multipage": encode(red(), "TIFF", save_all=True, append_images=[blue()]),
        "gif": encode(rgb, "GIF"),
        "gif_animated": encode(red(), "GIF", save_all=True, append_images=[blue()], duration=100, loop=0),
    }
    return tuple(seeds.items())


def seed_images() -> dict[str, bytes]:
    """Small (64-72 px) valid files: every accepted format, several modes and options
    each (progressive JPEG, CMYK, MPO, 16-bit, float, palette with transparency,
    animations, multi-page TIFF, TIFF compressions). All are accepted by the intake."""
    return dict(_seed_images())


def seed_format(name: str) -> str:
    """The container format a seed name belongs to ("jpeg_cmyk" -> "JPEG")."""
    head = name.split("_")[0].upper()
    return {"MPO": "JPEG", "APNG": "PNG"}.get(head, head)


# ---------------------------------------------------------------- mutations

MUTATIONS = (
    "truncate",
    "bit_flip",
    "byte_set",
    "byte_insert",
    "byte_delete",
    "chunk_shuffle",
    "chunk_duplicate",
    "header_patch",
    "size_patch",
)

_INTERESTING_BYTES = (0x00, 0x01, 0x7F, 0x80, 0xFE, 0xFF)
_INTERESTING_SIZES = (
    0,
    1,
    63,
    64,
    65,
    255,
    256,
    4096,
    16383,
    16384,
    32767,
    32768,
    65535,
    0x7FFFFFFF,
    0xFFFFFFFF,
)


def mutate(data: bytes, rng: random.Random, strategy: str | None = None) -> tuple[str, bytes]:
    """Apply one damage to `data`; returns (strategy, damaged bytes).

    truncate: cut at a random point; bit_flip: flip 1-16 bits; byte_set: set 1-8 bytes
    to boundary values; byte_insert / byte_delete: 1-64 random bytes in / out at one
    place; chunk_shuffle: cut into 2-6 pieces and reorder them (the first piece, with
    the magic number, stays first half the time); chunk_duplicate: repeat a piece;
    header_patch: random bytes over the first 64; size_patch: make the declared width
    and height (found per format) a boundary value.
    """
    strategy = strategy or rng.choice(MUTATIONS)
    buffer = bytearray(data)
    n = len(buffer)
    if n == 0:
        return strategy, bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 16)))
    if strategy == "truncate":
        return strategy, bytes(buffer[: rng.randrange(n)])
    if strategy == "bit_flip":
        for _ in range(rng.randint(1, 16)):
            buffer[rng.randrange(n)] ^= 1 << rng.randrange(8)
    elif strategy == "byte_set":
        for _ in range(rng.randint(1, 8)):
            buffer[rng.randrange(n)] = rng.choice(_INTERESTING_BYTES)
    elif strategy == "byte_insert":
        at = rng.randrange(n + 1)
        buffer[at:at] = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 64)))
    elif strategy == "byte_delete":
        at = rng.randrange(n)
        del buffer[at : at + rng.randint(1, 64)]
    elif strategy == "chunk_shuffle":
        cuts = sorted(rng.sample(range(1, n), min(n - 1, rng.randint(1, 5)))) if n > 1 else []
        pieces = [buffer[a:b] for a, b in zip([0, *cuts], [*cuts, n])]
        keep_first = rng.random() < 0.5
        head, rest = (pieces[:1], pieces[1:]) if keep_first else ([], pieces)
        rng.shuffle(rest)
        buffer = bytearray(b"".join(head + rest))
    elif strategy == "chunk_duplicate":
        a = rng.randrange(n)
        b = min(n, a + rng.randint(1, 4096))
        at = rng.randrange(n + 1)
        buffer[at:at] = buffer[a:b]
    elif strategy == "header_patch":
        for _ in range(rng.randint(1, 8)):
            buffer[rng.randrange(min(n, 64))] = rng.getrandbits(8)
    elif strategy == "size_patch":
        width, height = rng.choice(_INTERESTING_SIZES), rng.choice(_INTERESTING_SIZES)
        try:
            return strategy, set_declared_size(bytes(buffer), width, height)
        except (ValueError, struct.error):
            return strategy, bytes(buffer)  # no size field found: left as it was
    else:
        raise ValueError(f"unknown mutation {strategy!r}")
    return strategy, bytes(buffer)


# ---------------------------------------------------------------- declared sizes


def set_declared_size(data: bytes, width: int, height: int) -> bytes:
    """`data` (PNG, JPEG, TIFF, BMP, GIF or WebP) with its header claiming width x
    height; pixel data untouched, checksums (PNG) fixed. Values are wrapped to the
    field's width. Raises ValueError when no size field is found."""
    if data.startswith(b"\x89PNG"):
        return _png_size(data, width, height)
    if data.startswith(b"\xff\xd8"):
        return _jpeg_size(data, width, height)
    if data[:4] in (b"II*\0", b"MM\0*"):
        return _tiff_size(data, width, height)
    if data.startswith(b"BM"):
        buffer = bytearray(data)
        struct.pack_into("<ii", buffer, 18, _signed32(width), _signed32(height))
        return bytes(buffer)
    if data[:4] in (b"GIF8",):
        return _gif_size(data, width, height)
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return _webp_size(data, width, height)
    raise ValueError("unknown format")


def _signed32(value: int) -> int:
    value &= 0xFFFFFFFF
    return value - (1 << 32) if value >= 1 << 31 else value


def _png_size(data: bytes, width: int, height: int) -> bytes:
    if data[12:16] != b"IHDR":
        raise ValueError("no IHDR")
    header = b"IHDR" + struct.pack(">II", width & 0xFFFFFFFF, height & 0xFFFFFFFF) + data[24:29]
    return data[:12] + header + struct.pack(">I", zlib.crc32(header) & 0xFFFFFFFF) + data[33:]


def _jpeg_size(data: bytes, width: int, height: int) -> bytes:
    """Patch the first SOFn (start of frame) marker's height and width."""
    buffer = bytearray(data)
    position = 2
    while position + 4 <= len(buffer):
        if buffer[position] != 0xFF:
            raise ValueError("lost marker sync")
        marker = buffer[position + 1]
        if marker == 0xFF:
            position += 1
            continue
        length = struct.unpack_from(">H", buffer, position + 2)[0]
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            struct.pack_into(">HH", buffer, position + 5, height & 0xFFFF, width & 0xFFFF)
            return bytes(buffer)
        if marker == 0xDA:
            break
        position += 2 + length
    raise ValueError("no SOF marker")


def _tiff_size(data: bytes, width: int, height: int) -> bytes:
    """Patch ImageWidth (256) and ImageLength (257) in the first IFD."""
    endian = "<" if data[:2] == b"II" else ">"
    buffer = bytearray(data)
    offset = struct.unpack_from(endian + "I", buffer, 4)[0]
    count = struct.unpack_from(endian + "H", buffer, offset)[0]
    found = 0
    for i in range(count):
        entry = offset + 2 + 12 * i
        tag = struct.unpack_from(endian + "H", buffer, entry)[0]
        if tag in (256, 257):
            value = (width if tag == 256 else height) & 0xFFFFFFFF
            struct.pack_into(endian + "HHII", buffer, entry, tag, 4, 1, value)  # LONG x 1
            found += 1
    if not found:
        raise ValueError("no size tags")
    return bytes(buffer)


def _gif_size(data: bytes, width: int, height: int) -> bytes:
    """Patch the logical screen and the first image descriptor."""
    buffer = bytearray(data)
    struct.pack_into("<HH", buffer, 6, width & 0xFFFF, height & 0xFFFF)
    position = 13
    if buffer[10] & 0x80:
        position += 3 * (2 << (buffer[10] & 7))
    while position < len(buffer) and buffer[position] == 0x21:  # extension blocks
        position += 2
        while position < len(buffer) and buffer[position]:
            position += buffer[position] + 1
        position += 1
    if position + 9 <= len(buffer) and buffer[position] == 0x2C:
        struct.pack_into("<HH", buffer, position + 5, width & 0xFFFF, height & 0xFFFF)
    return bytes(buffer)


def _webp_size(data: bytes, width: int, height: int) -> bytes:
    """Patch VP8X canvas (24-bit sizes), else VP8L (14-bit) or VP8 (14-bit) frame."""
    buffer = bytearray(data)
    kind = bytes(buffer[12:16])
    if kind == b"VP8X":
        w, h = (max(width, 1) - 1) & 0xFFFFFF, (max(height, 1) - 1) & 0xFFFFFF
        buffer[24:30] = w.to_bytes(3, "little") + h.to_bytes(3, "little")
    elif kind == b"VP8L":
        bits = struct.unpack_from("<I", buffer, 21)[0]
        w, h = (max(width, 1) - 1) & 0x3FFF, (max(height, 1) - 1) & 0x3FFF
        struct.pack_into("<I", buffer, 21, (bits & ~0xFFFFFFF) | w | (h << 14))
    elif kind == b"VP8 ":
        struct.pack_into("<HH", buffer, 26, width & 0x3FFF, height & 0x3FFF)
    else:
        raise ValueError("unknown WebP chunk")
    return bytes(buffer)


# ---------------------------------------------------------------- decompression bombs

BOMB_SIZE = (30000, 30000)  # 900 megapixels


def bomb_png(width: int = 30000, height: int = 30000) -> bytes:
    """A 64x64 1-bit PNG (~100 bytes) whose IHDR declares width x height."""
    return _png_size(encode(Image.new("1", (64, 64)), "PNG"), width, height)


@lru_cache(maxsize=4)
def bomb_png_deflate(width: int = 30000, height: int = 30000) -> bytes:
    """A *valid* 1-bit PNG of width x height zeros: ~1000:1 compression (30000x30000 is
    ~110 kB holding 112 MB of pixels, 900 MB as RGB)."""
    return png_from_rows(width, height, bytes((width + 7) // 8), bit_depth=1, colour_type=0)


def bomb_jpeg(width: int = 30000, height: int = 30000) -> bytes:
    """A 64x64 JPEG whose SOF header declares width x height (at most 65535 each)."""
    return _jpeg_size(encode(Image.new("RGB", (64, 64), (90, 60, 40)), "JPEG"), width, height)


def bomb_tiff(width: int = 30000, height: int = 30000, compression: str | None = None) -> bytes:
    """A TIFF whose tags declare width x height over a 4 kB strip; with `compression`
    (e.g. "tiff_lzw") a 64x64 Pillow-written file with patched tags instead."""
    if compression:
        return _tiff_size(encode(Image.new("L", (64, 64), 7), "TIFF", compression=compression), width, height)
    return tiff_from_raw(width, height, bytes(4096))


def bomb_bmp(width: int = 30000, height: int = 30000, top_down: bool = False) -> bytes:
    """A 64x64 8-bit BMP whose info header declares width x height (negative height is
    BMP's top-down flag)."""
    buffer = bytearray(encode(Image.new("L", (64, 64), 7), "BMP"))
    struct.pack_into("<ii", buffer, 18, width, -height if top_down else height)
    return bytes(buffer)


def bomb_gif(width: int = 30000, height: int = 30000) -> bytes:
    """A 64x64 GIF whose screen and image descriptor declare width x height."""
    return _gif_size(encode(Image.new("L", (64, 64), 7), "GIF"), width, height)


def bomb_webp(width: int = 16384, height: int = 16384, kind: str = "lossless") -> bytes:
    """A 64x64 WebP declaring width x height: "lossless" (VP8L, at most 16384 a side),
    "lossy" (VP8, at most 16383) or "extended" (VP8X canvas, up to 2**24)."""
    image = Image.new("RGB", (64, 64), (90, 60, 40))
    if kind == "extended":
        exif = Image.Exif()
        exif[0x0112] = 1
        data = encode(image, "WEBP", lossless=True, exif=exif)
    else:
        data = encode(image, "WEBP", lossless=kind == "lossless")
    return _webp_size(data, width, height)


def bomb_cases() -> list[tuple[str, bytes]]:
    """Every bomb at 30000x30000 (Pillow's own bomb error), at 9000x7000 (63 MP: above
    our 40 MP limit, below Pillow's warning) and at 12000x10000 (120 MP: Pillow's
    warning, made an error by the intake); all must be refused as too large."""
    cases = []
    for width, height in ((30000, 30000), (9000, 7000), (12000, 10000)):
        size = f"{width}x{height}"
        cases += [
            (f"png_{size}", bomb_png(width, height)),
            (f"jpeg_{size}", bomb_jpeg(width, height)),
            (f"tiff_{size}", bomb_tiff(width, height)),
            (f"tiff_lzw_{size}", bomb_tiff(width, height, "tiff_lzw")),
            (f"bmp_{size}", bomb_bmp(width, height)),
            (f"bmp_topdown_{size}", bomb_bmp(width, height, top_down=True)),
            (f"gif_{size}", bomb_gif(width, height)),
        ]
    cases += [
        ("png_deflate_30000x30000", bomb_png_deflate(30000, 30000)),
        ("png_deflate_8000x8000", bomb_png_deflate(8000, 8000)),
        ("webp_lossless_16384x16384", bomb_webp(16384, 16384, "lossless")),
        ("webp_lossless_16384x4000", bomb_webp(16384, 4000, "lossless")),
        ("webp_lossy_16383x16383", bomb_webp(16383, 16383, "lossy")),
        ("jpeg_65535x65535", bomb_jpeg(65535, 65535)),
        ("png_2e9x2e9", bomb_png(2_000_000_000, 2_000_000_000)),
        ("tiff_4e9x1", bomb_tiff(0xFFFFFFFF, 64)),
    ]
    return cases


def near_limit_cases(width: int = 6300, height: int = 6300) -> list[tuple[str, bytes]]:
    """Seed files whose headers declare width x height (39.7 MP: just within the limit)
    over their few kB of data: the header check passes, so decoding is attempted and
    costs what a real image of that size would. Seeds whose size field cannot be
    patched (or whose field is too narrow) are left out."""
    cases = []
    for name, data in seed_images().items():
        if name.startswith("webp") and max(width, height) > 16383:
            continue
        try:
            cases.append((f"{name}_{width}x{height}", set_declared_size(data, width, height)))
        except (ValueError, struct.error):
            continue
    return cases


# ---------------------------------------------------------------- sizes


def tiny_image(width: int, height: int, fmt: str = "PNG") -> bytes:
    """A width x height image (1x1, 63x64, ...) in `fmt`."""
    return encode(pattern(width, height), fmt)


def extreme_aspect(width: int, height: int, fmt: str = "PNG") -> bytes:
    """A width x height strip (e.g. 64 x 20000) in `fmt`. PNG strips are streamed, so
    a 64 x 625000 (40 MP) one costs no memory to make."""
    if fmt == "PNG":
        row = bytes((np.arange(width * 3) * 7 % 256).astype(np.uint8))
        return png_from_rows(width, height, row, colour_type=2, level=6)
    return encode(pattern(width, height), fmt)


EXTREME_SIZES = (
    (1, 1),
    (1, 64),
    (64, 1),
    (63, 64),
    (64, 63),
    (64, 64),
    (64, 20000),
    (20000, 64),
    (65, 8000),
    (8000, 65),
    (64, 65500),
    (65500, 64),
)


# ---------------------------------------------------------------- EXIF


def exif_with_orientation(orientation: int, fmt: str = "JPEG", size=(96, 64)) -> bytes:
    """`fmt` file (JPEG, PNG, WEBP, TIFF) with EXIF orientation set to any 16-bit value."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(pattern(*size), fmt, exif=exif)


def huge_exif_jpeg(orientation: int = 6, exif_bytes: int = 60_000, size=(96, 64)) -> bytes:
    """A JPEG whose EXIF block is ~`exif_bytes` long (a JPEG APP1 segment holds at most
    64 kB), padded with an ImageDescription, plus an orientation value."""
    exif = Image.Exif()
    exif[0x0112] = orientation
    exif[0x010E] = "x" * max(0, exif_bytes - 200)
    return encode(pattern(*size), "JPEG", exif=exif)


def malformed_exif_jpeg(rng: random.Random, size=(96, 64)) -> bytes:
    """A JPEG with a hand-made APP1 EXIF segment of random IFD entries (random tags,
    types, counts and offsets, often the orientation tag), up to ~60 kB."""
    endian = rng.choice("<>")
    entries = rng.choice((0, 1, 5, 50, 500, rng.randint(0, 5000)))
    body = bytearray()
    for _ in range(entries):
        tag = 0x0112 if rng.random() < 0.3 else rng.choice((0x8769, 0x8825, 0x010E, rng.getrandbits(16)))
        kind = rng.randint(0, 13)
        count = rng.choice((0, 1, 2, 255, 0xFFFFFFFF, rng.getrandbits(32)))
        value = rng.choice((0, 1, 6, 8, 9, 255, 0xFFFFFFFF, rng.getrandbits(32)))
        body += struct.pack(endian + "HHII", tag, kind, count, value)
    body += struct.pack(endian + "I", rng.choice((0, 8, rng.getrandbits(32))))
    tiff = (b"II*\0" if endian == "<" else b"MM\0*") + struct.pack(endian + "I", 8)
    payload = b"Exif\0\0" + tiff + struct.pack(endian + "H", entries & 0xFFFF) + bytes(body)
    payload = payload[: 65533 - 2]
    segment = b"\xff\xe1" + struct.pack(">H", len(payload) + 2) + payload
    jpeg = encode(pattern(*size), "JPEG")
    return jpeg[:2] + segment + jpeg[2:]


ORIENTATIONS = (0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 255, 65535)


# ---------------------------------------------------------------- multi-frame


def multi_frame(fmt: str, sizes=((64, 64), (64, 64)), modes=("RGB", "RGB")) -> bytes:
    """A multi-frame `fmt` file (GIF, PNG, WEBP, TIFF, MPO) with the given frame sizes
    and modes; frames of other sizes than the first are allowed where the format is."""
    frames = [pattern(w, h, mode if fmt != "MPO" else "RGB") for (w, h), mode in zip(sizes, modes)]
    options = {"save_all": True, "append_images": frames[1:]}
    if fmt in ("GIF", "PNG", "WEBP"):
        options["duration"] = 50
    return encode(frames[0], fmt, **options)


def many_frames(fmt: str, frames: int = 200) -> bytes:
    """An animation/multi-page file with many 64x64 frames."""
    images = [Image.new("L", (64, 64), i % 256) for i in range(frames)]
    options = {"save_all": True, "append_images": images[1:]}
    if fmt in ("GIF", "PNG", "WEBP"):
        options["duration"] = 10
    return encode(images[0], fmt, **options)


# ---------------------------------------------------------------- NaN and friends


def nan_tiff(kind: str = "partial", size=(64, 64)) -> bytes:
    """A float32 TIFF: "partial" NaN block, "all_nan", "inf" (+inf block), "all_inf"
    (+-inf only), "huge_range" (+-3e38), "denormal" (0 .. 1e-45), "tiny_range"
    (values within 1e-38), "neg_zero" (-0.0 and 0.0 only)."""
    width, height = size
    values = np.tile(np.linspace(0, 1, width, dtype=np.float32), (height, 1))
    if kind == "partial":
        values[: height // 4, : width // 4] = np.nan
    elif kind == "all_nan":
        values[:] = np.nan
    elif kind == "inf":
        values[: height // 2] = np.inf
        values[0, 0] = -np.inf
    elif kind == "all_inf":
        values[:] = np.inf
        values[::2] = -np.inf
    elif kind == "huge_range":
        values = np.where(values > 0.5, np.float32(3e38), np.float32(-3e38))
    elif kind == "denormal":
        values = (values > 0.5).astype(np.float32) * np.float32(1e-45)
    elif kind == "tiny_range":
        values = values * np.float32(1e-38)
    elif kind == "neg_zero":
        values = np.where(values > 0.5, np.float32(0.0), np.float32(-0.0))
    else:
        raise ValueError(kind)
    return encode(Image.fromarray(values.astype(np.float32), "F"), "TIFF")


NAN_KINDS = ("partial", "all_nan", "inf", "all_inf", "huge_range", "denormal", "tiny_range", "neg_zero")


def float64_tiff(values: np.ndarray) -> bytes:
    """A hand-made 64-bit float TIFF (Pillow reads these, but cannot write them)."""
    values = np.asarray(values, dtype="<f8")
    return tiff_from_raw(values.shape[1], values.shape[0], values.tobytes(), bits=64, sample_format=3)


def flat_image(kind: str, value: int = 0, size=(64, 64)) -> bytes:
    """A constant image: "png16"/"tiff16" (16-bit), "tiff32" (int32), "float" (TIFF F),
    "png8", "jpeg", "png1" (1-bit), "png16_trns" (16-bit, transparent value = value)."""
    width, height = size
    if kind in ("png16", "tiff16", "png16_trns"):
        image = Image.fromarray(np.full((height, width), value, np.uint16))
        if kind == "png16_trns":
            return encode(image, "PNG", transparency=value)
        return encode(image, "PNG" if kind == "png16" else "TIFF")
    if kind == "tiff32":
        return encode(Image.fromarray(np.full((height, width), value, np.int32)), "TIFF")
    if kind == "float":
        return encode(Image.fromarray(np.full((height, width), value, np.float32)), "TIFF")
    if kind == "png1":
        return encode(Image.new("1", size, value & 1), "PNG")
    image = Image.new("RGB", size, (value & 255,) * 3)
    return encode(image, "JPEG" if kind == "jpeg" else "PNG")


FLAT_KINDS = ("png16", "tiff16", "png16_trns", "tiff32", "float", "png8", "jpeg", "png1")


def extreme_int_tiff(size=(64, 64)) -> bytes:
    """An int32 TIFF holding only -2**31 and 2**31 - 1 (the widest integer range)."""
    width, height = size
    values = np.full((height, width), -(2**31), np.int32)
    values[:, width // 2 :] = 2**31 - 1
    return encode(Image.fromarray(values), "TIFF")


# ---------------------------------------------------------------- odd containers


def odd_containers() -> list[tuple[str, bytes]]:
    """Files that are not accepted images, or accepted ones built in odd ways: other
    formats' magic numbers (PostScript must never reach Ghostscript), PNG text and
    chunk bombs, TIFF IFD loops, 0x0 images, PPM/ICO/PSD."""
    small = encode(pattern(64, 64), "PNG")
    text_bomb = png_chunk(b"zTXt", b"k\0\0" + zlib.compress(bytes(50_000_000), 9))
    iccp_bomb = png_chunk(b"iCCP", b"p\0\0" + zlib.compress(bytes(50_000_000), 9))
    loop_tiff = bytearray(tiff_from_raw(64, 64, bytes(64 * 64)))
    count = struct.unpack_from("<H", loop_tiff, 8)[0]
    struct.pack_into("<I", loop_tiff, 8 + 2 + 12 * count, 8)  # next IFD = this one
    cases = [
        ("postscript", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 64 64\nshowpage\n"),
        ("pdf", b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"),
        ("zip", b"PK\x03\x04" + bytes(60)),
        ("svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"/>'),
        ("html", b"<!doctype html><html><body><img src=x></body></html>"),
        ("ppm", encode(pattern(64, 64), "PPM")),
        ("ico", encode(pattern(64, 64), "ICO")),
        ("tga", encode(pattern(64, 64), "TGA")),
        ("magic_only_png", b"\x89PNG\r\n\x1a\n"),
        ("magic_only_jpeg", b"\xff\xd8\xff"),
        ("magic_only_gif", b"GIF89a"),
        ("magic_only_tiff", b"II*\0"),
        ("magic_only_webp", b"RIFF\0\0\0\0WEBP"),
        ("png_ztxt_bomb", small[:33] + text_bomb + small[33:]),
        ("png_iccp_bomb", small[:33] + iccp_bomb + small[33:]),
        ("png_40k_empty_chunks", segment_flood("png", 40_000)),
        ("png_60k_empty_chunks", segment_flood("png", 60_000)),
        ("png_60k_text_chunks", segment_flood("png_text", 60_000)),
        ("jpeg_60k_app1_segments", segment_flood("jpeg_app1", 60_000)),
        ("jpeg_60k_fill_bytes", segment_flood("jpeg_fill", 60_000)),
        ("jpeg_60k_junk_bytes", segment_flood("jpeg_junk", 60_000)),
        ("gif_60k_comment_subblocks", segment_flood("gif_comment", 60_000)),
        ("gif_60k_extensions", segment_flood("gif_extensions", 60_000)),
        ("png_0x0", _png_size(small, 0, 0)),
        ("tiff_ifd_loop", bytes(loop_tiff)),
        ("tiff_0x0", tiff_from_raw(0, 0, b"")),
        ("tiff_bits_0", tiff_from_raw(64, 64, bytes(4096), bits=0)),
        ("tiff_bits_33", tiff_from_raw(64, 64, bytes(4096 * 5), bits=33)),
        ("tiff_lab", tiff_from_raw(64, 64, bytes(64 * 64 * 3), photometric=8, samples=3)),
        ("tiff_signed8", tiff_from_raw(64, 64, bytes(range(256)) * 16, sample_format=2)),
        ("tiff_strip_past_end", tiff_from_raw(64, 64, bytes(10))),
        ("gif_0x0", _gif_size(encode(Image.new("L", (64, 64)), "GIF"), 0, 0)),
        ("bmp_0x0", set_declared_size(encode(Image.new("L", (64, 64)), "BMP"), 0, 0)),
        ("jpeg_0x0", _jpeg_size(encode(Image.new("RGB", (64, 64)), "JPEG"), 0, 0)),
    ]
    return cases


# Bytes per piece of each flood kind (for a flood of a given file size).
FLOOD_PIECE_BYTES = {
    "png": 12,
    "png_text": 15,
    "jpeg_app1": 4,
    "jpeg_com": 4,
    "jpeg_fill": 1,
    "jpeg_junk": 1,
    "gif_comment": 2,
    "gif_extensions": 3,
}
FLOOD_KINDS = tuple(FLOOD_PIECE_BYTES)


def segment_flood(kind: str, count: int) -> bytes:
    """A valid 64x64 image padded with `count` empty pieces that Pillow's parsers walk
    one by one in Python: "png" (empty private chunks), "png_text" (tEXt chunks),
    "jpeg_app1" / "jpeg_com" (empty segments), "jpeg_fill" (0xFF fill bytes),
    "jpeg_junk" (zero bytes between segments), "gif_comment" (one comment made of
    1-byte sub-blocks), "gif_extensions" (empty comment extensions). 19 MB worth
    (~1.5 million pieces) once took Pillow 5-11 s and up to +800 MB."""
    if kind.startswith("png"):
        base = encode(pattern(64, 64), "PNG")
        piece = png_chunk(b"tEXt", b"k\0v") if kind == "png_text" else png_chunk(b"prIv", b"")
        return base[:33] + piece * count + base[33:]
    if kind.startswith("jpeg"):
        base = encode(pattern(64, 64), "JPEG")
        after_app0 = 4 + struct.unpack_from(">H", base, 4)[0]
        piece = {
            "jpeg_app1": b"\xff\xe1\x00\x02",
            "jpeg_com": b"\xff\xfe\x00\x02",
            "jpeg_fill": b"\xff",
            "jpeg_junk": b"\x00",
        }[kind]
        return base[:after_app0] + piece * count + base[after_app0:]
    if kind.startswith("gif"):
        base = encode(pattern(64, 64, "L"), "GIF")
        table = 3 * (2 << (base[10] & 7)) if base[10] & 0x80 else 0
        flood = b"\x21\xfe" + b"\x01x" * count + b"\x00" if kind == "gif_comment" else b"\x21\xfe\x00" * count
        return base[: 13 + table] + flood + base[13 + table :]
    raise ValueError(kind)


# ---------------------------------------------------------------- random case families


def case_random_bytes(rng: random.Random) -> tuple[str, bytes]:
    """Random bytes, half the time behind a real magic number."""
    data = bytes(rng.getrandbits(8) for _ in range(rng.choice((1, 2, 8, 64, 512, 4096))))
    magic = rng.choice(
        (
            b"",
            b"",
            b"\x89PNG\r\n\x1a\n",
            b"\xff\xd8\xff\xe0",
            b"GIF89a",
            b"II*\0\x08\0\0\0",
            b"MM\0*\0\0\0\x08",
            b"BM",
            b"RIFF\0\0\0\0WEBPVP8L",
        )
    )
    return f"magic={magic[:4]!r}" if magic else "plain", magic + data


@lru_cache(maxsize=1)
def _mutation_extras() -> tuple[tuple[str, bytes], ...]:
    """Odd-but-valid files (and bombs) to damage besides the seeds."""
    extras = [(f"bomb_{name}", data) for name, data in bomb_cases() if len(data) < 20_000]
    extras += [
        ("huge_exif", huge_exif_jpeg(6, 60_000)),
        ("exif_orientation_9_png", exif_with_orientation(9, "PNG")),
        ("exif_orientation_5_webp", exif_with_orientation(5, "WEBP")),
        ("gif_3_frames", multi_frame("GIF", ((64, 64),) * 3, ("RGB", "P", "L"))),
        ("tiff_3_pages", multi_frame("TIFF", ((64, 64), (8, 8), (200, 80)), ("RGB", "L", "1"))),
        ("int32_extremes", extreme_int_tiff()),
        ("strip_64x2000", extreme_aspect(64, 2000, "PNG")),
    ]
    extras += [(f"float32_{kind}", nan_tiff(kind)) for kind in ("partial", "huge_range")]
    return tuple(extras)


def case_mutation(rng: random.Random) -> tuple[str, bytes]:
    """One seed image (any format/mode; a fifth of the time a bomb, EXIF, multi-frame,
    NaN or strip file instead), damaged once or a few times."""
    pool = seed_images() if rng.random() < 0.8 else dict(_mutation_extras())
    name = rng.choice(sorted(pool))
    data = pool[name]
    applied = []
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        strategy, data = mutate(data, rng)
        applied.append(strategy)
    return f"{name}:{'+'.join(applied)}", data


def case_bomb(rng: random.Random) -> tuple[str, bytes]:
    """A declared-size bomb of a random format and size above the limit."""
    width = rng.choice((6400, 9000, 12000, 20000, 30000, 65535))
    height = rng.choice((6400, 7000, 10000, 30000, 65535))
    maker = rng.choice(("png", "jpeg", "tiff", "tiff_lzw", "bmp", "bmp_topdown", "gif", "webp"))
    if maker == "webp":
        kind = rng.choice(("lossless", "lossy"))
        largest = 16384 if kind == "lossless" else 16383  # VP8: 14-bit sizes
        width, height = min(width, largest), min(height, largest)
        if width * height <= 40_000_000:
            width = height = largest
        return f"webp_{kind}_{width}x{height}", bomb_webp(width, height, kind)
    makers = {
        "png": bomb_png,
        "jpeg": bomb_jpeg,
        "tiff": bomb_tiff,
        "gif": bomb_gif,
        "tiff_lzw": lambda w, h: bomb_tiff(w, h, "tiff_lzw"),
        "bmp": bomb_bmp,
        "bmp_topdown": lambda w, h: bomb_bmp(w, h, top_down=True),
    }
    return f"{maker}_{width}x{height}", makers[maker](width, height)


def case_extreme_size(rng: random.Random) -> tuple[str, bytes]:
    """Tiny images, sizes at the minimum side, and long thin strips."""
    width, height = rng.choice(EXTREME_SIZES)
    fmt = rng.choice(("PNG", "PNG", "JPEG", "BMP", "TIFF", "GIF", "WEBP"))
    if fmt == "WEBP" and max(width, height) > 16383:
        fmt = "PNG"
    if fmt == "JPEG" and max(width, height) > 65500:
        fmt = "PNG"
    return f"{fmt}_{width}x{height}", extreme_aspect(width, height, fmt)


def case_exif(rng: random.Random) -> tuple[str, bytes]:
    """Valid and odd orientation values in several formats, huge and malformed EXIF."""
    kind = rng.choice(("orientation", "huge", "malformed"))
    if kind == "orientation":
        orientation = rng.choice(ORIENTATIONS)
        fmt = rng.choice(("JPEG", "PNG", "WEBP", "TIFF"))
        return f"orientation={orientation}_{fmt}", exif_with_orientation(orientation, fmt)
    if kind == "huge":
        orientation = rng.choice(ORIENTATIONS)
        size = rng.choice((1_000, 30_000, 60_000, 65_000))
        return f"huge_{size}_orientation={orientation}", huge_exif_jpeg(orientation, size)
    return "malformed", malformed_exif_jpeg(rng)


def case_multi_frame(rng: random.Random) -> tuple[str, bytes]:
    """Animations and multi-page files with odd first frames or many frames."""
    fmt = rng.choice(("GIF", "PNG", "WEBP", "TIFF", "MPO"))
    if rng.random() < 0.1:
        frames = rng.choice((50, 300))
        return f"{fmt}_{frames}_frames", many_frames(fmt, frames)
    sizes = [
        rng.choice(((64, 64), (1, 1), (8, 200), (200, 80), (64, 20000))) for _ in range(rng.randint(2, 4))
    ]
    if fmt in ("PNG", "WEBP", "GIF", "MPO"):
        sizes = [sizes[0]] * len(sizes)  # animations keep one canvas size
    if fmt == "WEBP" and max(sizes[0]) > 16383:
        sizes = [(64, 64)] * len(sizes)
    modes = [rng.choice(("RGB", "L", "RGBA", "P", "1")) for _ in sizes]
    if fmt == "WEBP":
        modes = [m if m in ("RGB", "RGBA") else "RGB" for m in modes]
    if fmt == "JPEG" or fmt == "MPO":
        modes = ["RGB"] * len(sizes)
    try:
        data = multi_frame(fmt, tuple(sizes), tuple(modes))
    except Exception as error:  # noqa: BLE001 - a combination Pillow cannot write
        return f"{fmt}_unwritable_{type(error).__name__}", multi_frame(fmt)
    return f"{fmt}_{'+'.join(f'{w}x{h}{m}' for (w, h), m in zip(sizes, modes))}", data


def case_nan(rng: random.Random) -> tuple[str, bytes]:
    """Float TIFFs with NaN/inf/denormals, float64 TIFFs, flat and extreme-valued images."""
    kind = rng.choice(("nan", "nan", "float64", "flat", "flat", "int_extremes"))
    if kind == "nan":
        which = rng.choice(NAN_KINDS)
        return f"float32_{which}", nan_tiff(which)
    if kind == "float64":
        values = np.tile(np.linspace(0, 1, 64), (64, 1))
        special = rng.choice((np.nan, np.inf, -np.inf, 1e300, -1e300, 5e-324, 0.0))
        values[:16, :16] = special
        return f"float64_{special}", float64_tiff(values)
    if kind == "flat":
        which = rng.choice(FLAT_KINDS)
        value = rng.choice((0, 1, 255, 65535, -1, 2**31 - 1))
        if which in ("png16", "tiff16", "png16_trns"):
            value = value & 0xFFFF
        elif which == "float":
            value = float(value)
        elif which not in ("tiff32",):
            value = value & 0xFF if value >= 0 else 0
        return f"flat_{which}={value}", flat_image(which, value)
    return "int32_extremes", extreme_int_tiff()


def case_odd_container(rng: random.Random) -> tuple[str, bytes]:
    """One of `odd_containers()`."""
    cases = _odd_containers_cached()
    return cases[rng.randrange(len(cases))]


@lru_cache(maxsize=1)
def _odd_containers_cached() -> tuple[tuple[str, bytes], ...]:
    return tuple(odd_containers())


CASE_FAMILIES = {
    "random_bytes": case_random_bytes,
    "mutation": case_mutation,
    "bomb": case_bomb,
    "extreme_size": case_extreme_size,
    "exif": case_exif,
    "multi_frame": case_multi_frame,
    "nan": case_nan,
    "odd_container": case_odd_container,
}


# ---------------------------------------------------------------- measuring


def rss_peak_reset() -> bool:
    """Reset this process's peak RSS (Linux); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False
