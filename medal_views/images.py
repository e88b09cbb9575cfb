"""Small image helpers for display: downscaling, PNG encoding and data URIs.

Everything stays in memory (uploads are never written to disk); inputs are (h, w, 3)
uint8 RGB arrays as produced by `medal_core.data.intake.read_upload`.
"""

from __future__ import annotations

import base64
import io

import numpy as np
from PIL import Image


def downscale(rgb: np.ndarray, max_side: int) -> np.ndarray:
    """`rgb` shrunk so that its longer side is at most `max_side` px (aspect kept);
    returned unchanged when it is already small enough. Never enlarges."""
    if max_side < 1:
        raise ValueError(f"max_side must be at least 1, got {max_side}")
    height, width = rgb.shape[:2]
    scale = max_side / max(height, width)
    if scale >= 1:
        return rgb
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize(size, Image.Resampling.LANCZOS))


def png_bytes(image: np.ndarray, max_side: int | None = None) -> bytes:
    """PNG encoding of an (h, w, 3) uint8 RGB or (h, w) grey image, optionally
    downscaled first to `max_side`."""
    image = np.ascontiguousarray(image, dtype=np.uint8)
    if max_side is not None:
        image = downscale(image, max_side)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG", optimize=False)
    return buffer.getvalue()


def png_data_uri(image: np.ndarray, max_side: int | None = None) -> str:
    """`data:image/png;base64,...` for embedding an image in HTML or a table cell."""
    return "data:image/png;base64," + base64.b64encode(png_bytes(image, max_side)).decode("ascii")
