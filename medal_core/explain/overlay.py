"""Drawing explanations: a heatmap over an image, its colour scale, and a grid of
activation maps. Plain NumPy and OpenCV (no TensorFlow): arrays in, uint8 pictures out.
"""

from __future__ import annotations

import math

import cv2
import numpy as np


def overlay_heatmap(
    rgb: np.ndarray, heatmap: np.ndarray, opacity: float = 0.4, colormap: int = cv2.COLORMAP_JET
) -> np.ndarray:
    """Blend a colour-mapped heatmap over an image.

    rgb: uint8 (h, w, 3), any size (e.g. the original upload). heatmap: (hs, ws) with
    values in [0, 1] (clipped), bilinearly resized to (h, w). opacity: weight of the
    heatmap colours, 0 (image only) to 1 (colours only). colormap: an OpenCV
    `cv2.COLORMAP_*`. Returns uint8 RGB (h, w, 3).
    """
    rgb = np.asarray(rgb)
    heatmap = np.asarray(heatmap)
    if rgb.dtype != np.uint8:
        raise TypeError(f"rgb must be uint8, got {rgb.dtype}")
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"rgb must have shape (h, w, 3), got {rgb.shape}")
    if heatmap.ndim != 2 or min(heatmap.shape) == 0:
        raise ValueError(f"heatmap must have shape (h, w), got {heatmap.shape}")
    if not (isinstance(opacity, (int, float)) and 0.0 <= opacity <= 1.0):
        raise ValueError(f"opacity must be a number in [0, 1], got {opacity!r}")
    height, width = rgb.shape[:2]
    heat = np.nan_to_num(heatmap.astype(np.float32), nan=0.0)
    heat = np.clip(cv2.resize(heat, (width, height), interpolation=cv2.INTER_LINEAR), 0, 1)
    bgr = cv2.applyColorMap(np.rint(heat * 255).astype(np.uint8), colormap)
    colours = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)  # OpenCV colormaps come out BGR
    blended = (1.0 - opacity) * rgb.astype(np.float32) + opacity * colours.astype(np.float32)
    return np.clip(np.rint(blended), 0, 255).astype(np.uint8)


def colour_scale(width: int = 256, height: int = 14, colormap: int = cv2.COLORMAP_JET) -> np.ndarray:
    """The overlay's colour scale as a uint8 RGB strip (height, width, 3): left is 0 (no
    evidence), right is 1 (the strongest evidence in the image, either direction)."""
    ramp = np.tile(np.linspace(0, 255, width).astype(np.uint8), (height, 1))
    return cv2.cvtColor(cv2.applyColorMap(ramp, colormap), cv2.COLOR_BGR2RGB)


def activation_grid(
    maps: np.ndarray, columns: int = 4, pad: int = 2, colormap: int | None = None, pad_value: int = 255
) -> np.ndarray:
    """Tile k maps (k, h, w) in [0, 1] into one image for display.

    The grid has c = min(columns, k) columns and r = ceil(k / columns) rows, with `pad`
    pixels of `pad_value` between tiles (none around the edge), so its size is
    H = r·h + (r − 1)·pad by W = c·w + (c − 1)·pad. Returns uint8 grayscale (H, W), or
    RGB (H, W, 3) coloured with OpenCV `colormap` (e.g. `cv2.COLORMAP_VIRIDIS`).
    """
    maps = np.asarray(maps)
    if maps.ndim != 3 or 0 in maps.shape:
        raise ValueError(f"maps must have shape (k, h, w) with k ≥ 1, got {maps.shape}")
    if columns < 1 or pad < 0:
        raise ValueError(f"need columns ≥ 1 and pad ≥ 0, got columns={columns}, pad={pad}")
    k, h, w = maps.shape
    cols, rows = min(columns, k), math.ceil(k / columns)
    tiles = np.rint(np.clip(np.nan_to_num(maps.astype(np.float32)), 0, 1) * 255).astype(np.uint8)
    grid = np.full((rows * h + (rows - 1) * pad, cols * w + (cols - 1) * pad), pad_value, dtype=np.uint8)
    is_tile = np.zeros(grid.shape, dtype=bool)
    for index, tile in enumerate(tiles):
        top, left = (index // cols) * (h + pad), (index % cols) * (w + pad)
        grid[top : top + h, left : left + w] = tile
        is_tile[top : top + h, left : left + w] = True
    if colormap is None:
        return grid
    coloured = cv2.cvtColor(cv2.applyColorMap(grid, colormap), cv2.COLOR_BGR2RGB)
    # Keep the padding neutral rather than coloured as if it were a strong activation.
    coloured[~is_tile] = pad_value
    return coloured
