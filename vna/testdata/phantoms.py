"""Synthetic anatomy for the test data: a chest CT slice in HU, a head MR slice.

Plain numpy, deterministic; ``z`` in [-1, 1] moves through the volume so that a
series of slices changes like a real one (the body narrows towards its ends).
"""

from __future__ import annotations

import numpy as np


def _grid(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    return np.mgrid[-1 : 1 : rows * 1j, -1 : 1 : cols * 1j]


def chest_hu(rows: int, cols: int, z: float = 0.0) -> np.ndarray:
    """A chest-like slice in Hounsfield units: body, lungs, spine, heart, ribs."""
    y, x = _grid(rows, cols)
    img = np.full((rows, cols), -1000.0)

    def ellipse(cx: float, cy: float, ax: float, ay: float) -> np.ndarray:
        return ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 <= 1.0

    s = np.sqrt(max(0.05, 1.0 - 0.6 * z * z))
    img[ellipse(0, 0.05, 0.85 * s, 0.6 * s)] = 40  # skin and muscle
    img[ellipse(0, 0.05, 0.8 * s, 0.55 * s)] = -80  # subcutaneous fat
    img[ellipse(0, 0.05, 0.74 * s, 0.5 * s)] = 35
    for side in (-1, 1):
        img[ellipse(side * 0.36, 0.0, 0.28 * s, 0.38 * s)] = -820  # lungs
    img[ellipse(0.08, -0.05, 0.2 * s, 0.18 * s)] = 45 + 10 * z  # heart
    img[ellipse(0, 0.42 * s, 0.09, 0.08)] = 700  # vertebra
    img[ellipse(0, 0.42 * s, 0.04, 0.035)] = 30  # spinal canal
    img[ellipse(0.0, -0.22, 0.05, 0.05)] = 160 + 40 * z  # aorta with contrast
    ring = ellipse(0, 0.05, 0.78 * s, 0.53 * s) & ~ellipse(0, 0.05, 0.74 * s, 0.49 * s)
    img[ring & (np.sin(np.arctan2(y, x) * 14) > 0.6)] = 500  # ribs
    rng = np.random.default_rng(int((z + 2) * 1000))
    return img + rng.normal(0, 6, img.shape)


def head_t2(rows: int, cols: int, z: float = 0.0) -> np.ndarray:
    """A T2-weighted axial head slice (arbitrary units, 0..4095): bright scalp fat
    and CSF, dark skull, gray matter brighter than white matter, folded cortex."""
    y, x = _grid(rows, cols)
    shrink = np.sqrt(max(0.1, 1 - 0.7 * z * z))
    r = np.sqrt((x / 0.78) ** 2 + (y / 0.92) ** 2) / shrink
    theta = np.arctan2(y, x)
    img = np.zeros((rows, cols))
    img[r < 1.0] = 900  # scalp
    img[r < 0.95] = 60  # skull
    img[r < 0.9] = 1300  # CSF around the brain
    img[r < 0.87] = 700  # gray matter
    folds = 0.72 + 0.06 * np.sin(11 * theta + 2.5 * np.sin(3 * theta))
    img[r < folds] = 480  # white matter
    sulci = (r > folds) & (r < 0.86) & (np.cos(22 * theta + 3 * np.sin(5 * theta)) > 0.85)
    img[sulci] = 1250  # CSF in the sulci
    for side in (-1, 1):  # lateral ventricles
        img[((x - side * 0.09) / 0.07) ** 2 + ((y + 0.05) / (0.28 * shrink)) ** 2 < 1] = 1500
    rng = np.random.default_rng(int((z + 2) * 1000) + 7)
    return np.clip(img + rng.normal(0, 12, img.shape), 0, 4095)
