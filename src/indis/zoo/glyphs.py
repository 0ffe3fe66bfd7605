"""The glyphs data set: the 62 characters 0-9, A-Z, a-z rendered at 16x16 from the text faces matplotlib ships.

Faces (21): DejaVu Sans, Sans Mono and Serif in regular, bold, oblique/italic and bold-oblique/italic (12), STIX General
in the same four (4), and the Computer Modern text faces cmr10, cmb10, cmti10, cmss10, cmtt10 (5). Two of them never
appear in training (`HELDOUT_FACES`: DejaVu Serif Bold Italic and Computer Modern Sans cmss10).

Rendering (`render`): the glyph outline (matplotlib `TextPath`) is placed on the face's em box, so case and baseline
survive (x is centred, y maps the face's cap-to-descender range "Hg" to the image height with a margin), then
augmented by one affine map drawn per glyph: rotation U(-8, 8) degrees, scale U(0.85, 1.05), horizontal shear
U(-0.15, 0.15), translation U(-0.75, 0.75) pixels on each axis (sub-pixel). The filled outline (even-odd rule, so
holes stay open) is sampled on a 32x32 grid, the stroke width changed by one of {erode, none, dilate} with a 2x2
structuring element (about -0.5, 0, +0.5 output pixels; probabilities 1/4, 1/2, 1/4; an erosion that would remove
more than half of the ink, as on the thin italic faces, is skipped), and averaged 2x2 down to 16x16 (anti-aliasing),
then scaled from [0, 1] (ink) to [-1, 1] with -1 as background.

Every glyph i of a split draws its face, character and augmentation from its own random stream
`numpy.SeedSequence([seed, split, i])`, so the arrays are identical on every run and machine (up to the platform's
float rounding in the affine map, far below a sampling cell).
"""
from __future__ import annotations

import os
from functools import lru_cache
from typing import Sequence

import numpy as np
import torch

from ..errors import InputError

CHARS = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
FACES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSans-Oblique.ttf", "DejaVuSans-BoldOblique.ttf",
         "DejaVuSansMono.ttf", "DejaVuSansMono-Bold.ttf", "DejaVuSansMono-Oblique.ttf", "DejaVuSansMono-BoldOblique.ttf",
         "DejaVuSerif.ttf", "DejaVuSerif-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSerif-BoldItalic.ttf",
         "STIXGeneral.ttf", "STIXGeneralBol.ttf", "STIXGeneralItalic.ttf", "STIXGeneralBolIta.ttf",
         "cmr10.ttf", "cmb10.ttf", "cmti10.ttf", "cmss10.ttf", "cmtt10.ttf")
HELDOUT_FACES = ("DejaVuSerif-BoldItalic.ttf", "cmss10.ttf")
TRAIN_FACES = tuple(f for f in FACES if f not in HELDOUT_FACES)
RESOLUTION = 16
SUPER = 2  # supersampling factor per axis
SPLITS = {"train": (0, 60_000), "heldout": (1, 6_000)}  # split -> (stream id, default size)
HELDOUT_FACE_SHARE = 0.5  # share of the held-out split drawn from the two held-out faces


def _font_dir() -> str:
    import matplotlib

    return os.path.join(matplotlib.get_data_path(), "fonts", "ttf")


@lru_cache(maxsize=None)
def _outline(face: str, char: str) -> tuple[np.ndarray, ...]:
    """Closed polygons of `char` in `face` (font units at size 1, baseline y = 0)."""
    from matplotlib.font_manager import FontProperties
    from matplotlib.textpath import TextPath

    path = os.path.join(_font_dir(), face)
    if not os.path.isfile(path):
        raise InputError(f"font file {face} is missing from matplotlib's fonts ({_font_dir()}); reinstall matplotlib")
    tp = TextPath((0, 0), char, size=1.0, prop=FontProperties(fname=path))
    polys = tuple(np.asarray(p, dtype=np.float64) for p in tp.to_polygons(closed_only=True) if len(p) > 2)
    if not polys:
        raise InputError(f"face {face} has no outline for {char!r}")
    return polys


@lru_cache(maxsize=None)
def _em_box(face: str) -> tuple[float, float]:
    """The face's vertical range (bottom of 'g', top of 'H'): its em box on the image."""
    lo = min(float(p[:, 1].min()) for p in _outline(face, "g"))
    hi = max(float(p[:, 1].max()) for p in _outline(face, "H"))
    return lo, hi


def _grid() -> np.ndarray:
    s = RESOLUTION * SUPER
    ys, xs = np.mgrid[0:s, 0:s]
    return np.stack([(xs.ravel() + 0.5) / s, 1 - (ys.ravel() + 0.5) / s], 1)


_GRID = _grid()


def render(face: str, char: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """One glyph [16, 16] in [-1, 1] (ink +1); `rng` draws the augmentation (None: the plain glyph)."""
    from matplotlib.path import Path
    from scipy.ndimage import grey_dilation, grey_erosion

    polys = _outline(face, char)
    lo, hi = _em_box(face)
    xs = np.concatenate([p[:, 0] for p in polys])
    cx, cy = 0.5 * (xs.min() + xs.max()), 0.5 * (lo + hi)
    base = 0.86 / (hi - lo)  # the em box fills 86% of the height
    ang = sh = off_x = off_y = stroke = 0.0
    sc = 1.0
    if rng is not None:
        ang = np.deg2rad(rng.uniform(-8, 8))
        sc = rng.uniform(0.85, 1.05)
        sh = rng.uniform(-0.15, 0.15)
        off_x, off_y = rng.uniform(-0.75, 0.75, 2) / RESOLUTION
        stroke = rng.choice([-1, 0, 0, 1])
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    A = rot @ np.array([[1.0, sh], [0.0, 1.0]]) * (base * sc)
    inside = np.zeros(len(_GRID), dtype=bool)
    for p in polys:  # even-odd rule: holes (in 0, A, B, 8, ...) stay open
        inside ^= Path((p - (cx, cy)) @ A.T + (0.5 + off_x, 0.5 + off_y)).contains_points(_GRID)
    s = RESOLUTION * SUPER
    img = inside.reshape(s, s).astype(np.float32)
    if stroke > 0:
        img = grey_dilation(img, size=(2, 2))
    elif stroke < 0:
        thin = grey_erosion(img, size=(2, 2))
        img = thin if thin.sum() >= 0.5 * img.sum() else img
    img = img.reshape(RESOLUTION, SUPER, RESOLUTION, SUPER).mean((1, 3))
    return (2.0 * img - 1.0).astype(np.float32)


def _draw(split: str, seed: int, i: int) -> tuple[str, int, np.random.Generator]:
    stream = SPLITS[split][0]
    rng = np.random.default_rng(np.random.SeedSequence([seed, stream, i]))
    if split == "heldout" and rng.random() < HELDOUT_FACE_SHARE:
        face = HELDOUT_FACES[rng.integers(len(HELDOUT_FACES))]
    else:
        face = TRAIN_FACES[rng.integers(len(TRAIN_FACES))]
    return face, int(rng.integers(len(CHARS))), rng


def _make(split: str, seed: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    x = np.empty((hi - lo, 1, RESOLUTION, RESOLUTION), dtype=np.float32)
    y = np.empty(hi - lo, dtype=np.int64)
    faces: list[str] = []
    for i in range(lo, hi):
        face, c, rng = _draw(split, seed, i)
        x[i - lo, 0] = render(face, CHARS[c], rng)
        y[i - lo] = c
        faces.append(face)
    return x, y, faces


def make_glyphs(split: str = "train", n: int | None = None, seed: int = 0,
                workers: int | None = None) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Glyph images [n, 1, 16, 16] (float32, [-1, 1]), labels [n] (index into CHARS) and the face of each. Each
    glyph has its own random stream, so `workers` processes (default: the CPUs) give the same arrays as one."""
    if split not in SPLITS:
        raise InputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    n = SPLITS[split][1] if n is None else n
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"n must be a positive integer, got {n!r}")
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = max(1, min(workers, n // 2000 or 1))  # small sets: one process (no start-up cost)
    if workers == 1:
        return _make(split, seed, 0, n)
    import multiprocessing as mp

    bounds = np.linspace(0, n, workers + 1).astype(int)
    with mp.get_context("fork" if hasattr(os, "fork") else "spawn").Pool(workers) as pool:
        parts = pool.starmap(_make, [(split, seed, int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:])])
    return (np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts]),
            [f for p in parts for f in p[2]])


def load_glyphs_tensor(split: str = "train", n: int | None = None, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(images [n, 1, 16, 16] in [-1, 1], labels [n]) as torch tensors."""
    x, y, _ = make_glyphs(split, n, seed)
    return torch.from_numpy(x), torch.from_numpy(y)


def plain_sheet(faces: Sequence[str] = FACES) -> np.ndarray:
    """Every character of every face without augmentation: [len(faces), 62, 16, 16] (for a visual check)."""
    return np.stack([np.stack([render(f, c) for c in CHARS]) for f in faces])
