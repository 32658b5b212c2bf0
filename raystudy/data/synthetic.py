"""Embedded default data set: procedural, holographic-looking ice-crystal images.

The real NASCENT and CLOUDLAB images (HOLIMO3B holograms, paper Sect. 2) are not
redistributable, so raystudy ships a seeded, deterministic generator that mimics
their look and class mix closely enough to run the whole label-efficiency study
end to end on a laptop.

Images
------
Every image is a dark crystal "shadow" on a lighter, slightly uneven grey
background, as in a reconstructed hologram: the object is drawn as optical
density (0 = transparent, 1 = opaque), blurred (defocus), multiplied into the
background, surrounded by soft interference rings (bright/dark fringes that
follow the outline and fade with distance) and overlaid with white and speckle
noise. Each crystal gets a random orientation, size and a small position jitter.
All lengths below are in pixels of a 64 px image and scale with ``size``.

Basic habits (Table 2):

* ``column``: an elongated rectangle (side view of a hexagonal prism, aspect
  2.5 to 6) with a dark rim and two slightly darker inner prism-edge lines.
* ``plate``: a (possibly tilted, i.e. squashed) hexagon with a light, translucent
  interior, a dark rim, an inner hexagonal ridge and sometimes radial ridges.
* ``lollipop``: a short column with a round frozen drop at one end.
* ``droplet``: a slightly non-spherical, opaque frozen drop, often with the
  bright central (Arago/Poisson) spot of holographic reconstructions.
* ``irregular``: a large, jagged random polygon without a defined habit.
* ``small``: a tiny blob of about 3 to 6 px.
* ``cpc``: a column capped at each end by a thin, wide plate seen edge-on
  (a dumbbell / capital-I outline).

Microphysical processes:

* ``*_aged`` (riming): the base habit with a bumpy, softly textured outline made
  of many small frozen droplets (discs) along its edges and a few on its faces.
* ``*_aggregate``: the base habit plus one or two other habits (possibly the
  same habit) touching or overlapping it; overlapping parts get darker.
* ``*_aged_aggregate``: an aggregate whose members are all rimed.

Any ``<basic habit>[_aged][_aggregate]`` name renders; the 19 categories of
:data:`raystudy.catalog.CATEGORIES_19` are the ones the presets use.

Campaigns and domain shift
--------------------------
:data:`CAMPAIGN_PRESETS` holds one :class:`CampaignStyle` per campaign of Table 1.
The class mixes follow Sect. 2 and Fig. 1: NASCENT19 has all 19 categories,
dominated by column (~29 %), cpc and column_aged (together ~66.5 %), with
aged shapes ~22 %, aggregates ~6.3 % and aged aggregates ~5.9 %, and a long
tail; NASCENT20 has 14 categories, dominated by irregular, small and
irregular_aggregate (~54 %), and lacks lollipop, cpc, lollipop_aggregate,
droplet_aggregate and cpc_aggregate; CLOUDLAB has only the four column
categories. The imaging style shifts too: CLOUDLAB has a brighter background,
more noise, lower contrast and more blur than NASCENT19; NASCENT20 has a darker,
more uneven background and stronger fringes. A model trained on NASCENT19 thus
meets a visible domain shift on CLOUDLAB, as in the paper's generalization test.

Determinism
-----------
Each image is drawn with its own random generator, seeded from
``(seed, campaign, category, index)`` through :class:`numpy.random.SeedSequence`,
so an image does not depend on generation order, on the other classes or on
``n_images``. :func:`generate_dataset` writes PNG files atomically and is
idempotent (a marker file records a hash of the full spec).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage

from raystudy.catalog import BASIC_HABITS, CATEGORIES_4, CATEGORIES_19

__all__ = [
    "GENERATOR_VERSION",
    "MARKER_NAME",
    "CampaignStyle",
    "CAMPAIGN_PRESETS",
    "class_counts",
    "image_rng",
    "render_crystal",
    "generate_campaign",
    "generate_dataset",
    "spec_hash",
]

# Bump whenever a change alters the pixels or layout, so cached data sets are redone.
GENERATOR_VERSION = "1"
MARKER_NAME = ".synthetic.json"

_SUFFIXES = ("_aged_aggregate", "_aggregate", "_aged")
# Lengths are given in pixels of a 64 px image.
_UNIT_SIZE = 64.0


def _parse_category(category: str) -> tuple[str, bool, bool]:
    """``(basic habit, aged, aggregate)`` of a category name."""
    for suffix in _SUFFIXES:
        if category.endswith(suffix):
            base = category[: -len(suffix)]
            aged = "aged" in suffix
            aggregate = "aggregate" in suffix
            break
    else:
        base, aged, aggregate = category, False, False
    if base not in BASIC_HABITS:
        raise ValueError(
            f"cannot render category '{category}': expected a basic habit {list(BASIC_HABITS)} "
            "optionally followed by _aged, _aggregate or _aged_aggregate"
        )
    return base, aged, aggregate


@dataclass(frozen=True)
class CampaignStyle:
    """Imaging style and class mix of one campaign.

    Intensities are fractions of full scale (0 = black, 1 = white); lengths are
    pixels of a 64 px image (they scale with the image size).
    """

    background: float = 0.62
    """Mean background grey level."""
    gradient: float = 0.05
    """Amplitude of the background's linear gradient and low-frequency unevenness."""
    noise_sigma: float = 0.03
    """Standard deviation of the pixel noise (half white, half speckle)."""
    contrast: float = 0.85
    """Darkness of an opaque crystal relative to the background (1 = black)."""
    blur_sigma: float = 0.6
    """Gaussian blur (defocus) of the crystal, in pixels."""
    fringe_strength: float = 0.10
    """Amplitude of the interference rings around the edges, relative to the background."""
    fringe_period: float = 3.5
    """Spacing of the interference rings, in pixels."""
    class_weights: dict[str, float] = field(default_factory=dict)
    """Relative frequency per category; categories with weight 0 or absent are not drawn."""

    def __post_init__(self) -> None:
        for name in ("background", "contrast"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"CampaignStyle.{name} must lie in [0, 1], got {value}")
        for name in ("gradient", "noise_sigma", "blur_sigma", "fringe_strength"):
            if getattr(self, name) < 0:
                raise ValueError(f"CampaignStyle.{name} must be >= 0, got {getattr(self, name)}")
        if self.fringe_period <= 0:
            raise ValueError(f"CampaignStyle.fringe_period must be > 0, got {self.fringe_period}")
        for cat, w in self.class_weights.items():
            if not (isinstance(w, numbers.Real) and math.isfinite(w) and w >= 0):
                raise ValueError(f"CampaignStyle.class_weights['{cat}'] must be finite and >= 0, got {w}")
            if w > 0:
                _parse_category(cat)

    def __hash__(self) -> int:  # dict field: hash the canonical JSON instead
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["class_weights"] = {k: float(v) for k, v in self.class_weights.items()}
        return d

    @property
    def categories(self) -> tuple[str, ...]:
        """Categories with a positive weight, in the order of ``class_weights``."""
        return tuple(c for c, w in self.class_weights.items() if w > 0)


def _weights(pairs: Mapping[str, float]) -> dict[str, float]:
    """Weights in CATEGORIES_19 order (missing categories get 0)."""
    unknown = set(pairs) - set(CATEGORIES_19)
    assert not unknown, unknown
    return {c: float(pairs.get(c, 0.0)) for c in CATEGORIES_19}


# Percentages derived from Sect. 2, Sect. 4 and Fig. 1 of the paper:
# column 28.8 %; column + cpc + column_aged = 66.5 %; aged 22.1 %,
# aggregate 6.34 %, aged_aggregate 5.91 %; the 4 column categories = 9182/18864.
_NASCENT19 = _weights(
    {
        "column": 28.8,
        "plate": 2.5,
        "lollipop": 1.5,
        "droplet": 1.05,
        "irregular": 2.5,
        "small": 5.5,
        "cpc": 23.8,
        "column_aged": 13.9,
        "column_aggregate": 1.6,
        "column_aged_aggregate": 4.4,
        "plate_aged": 4.4,
        "plate_aggregate": 1.2,
        "plate_aged_aggregate": 0.8,
        "lollipop_aggregate": 0.6,
        "droplet_aged": 3.8,
        "droplet_aggregate": 0.54,
        "droplet_aged_aggregate": 0.71,
        "irregular_aggregate": 1.5,
        "cpc_aggregate": 0.9,
    }
)
# Plate temperature regime; irregular + small + irregular_aggregate = 54.4 %.
_NASCENT20 = _weights(
    {
        "column": 5.0,
        "plate": 10.0,
        "droplet": 3.0,
        "irregular": 22.0,
        "small": 18.4,
        "column_aged": 4.0,
        "column_aggregate": 2.0,
        "column_aged_aggregate": 1.6,
        "plate_aged": 7.0,
        "plate_aggregate": 6.0,
        "plate_aged_aggregate": 4.0,
        "droplet_aged": 2.0,
        "droplet_aged_aggregate": 1.0,
        "irregular_aggregate": 14.0,
    }
)
_CLOUDLAB = {c: w for c, w in zip(CATEGORIES_4, (45.0, 30.0, 10.0, 15.0), strict=True)}

CAMPAIGN_PRESETS: dict[str, CampaignStyle] = {
    "NASCENT19": CampaignStyle(
        background=0.60,
        gradient=0.05,
        noise_sigma=0.025,
        contrast=0.88,
        blur_sigma=0.55,
        fringe_strength=0.14,
        fringe_period=3.5,
        class_weights=_NASCENT19,
    ),
    "NASCENT20": CampaignStyle(
        background=0.54,
        gradient=0.09,
        noise_sigma=0.035,
        contrast=0.90,
        blur_sigma=0.45,
        fringe_strength=0.18,
        fringe_period=3.2,
        class_weights=_NASCENT20,
    ),
    "CLOUDLAB": CampaignStyle(
        background=0.76,
        gradient=0.04,
        noise_sigma=0.055,
        contrast=0.72,
        blur_sigma=1.0,
        fringe_strength=0.09,
        fringe_period=4.2,
        class_weights=_CLOUDLAB,
    ),
}


# --------------------------------------------------------------------------- counts, seeds


def class_counts(weights: Mapping[str, float], n_images: int) -> dict[str, int]:
    """Images per category: largest-remainder rounding of ``n_images * w / sum(w)``.

    Categories with weight 0 get none. When ``n_images`` is at least the number of
    positive-weight categories, each of them gets at least one image (taken from
    the largest class). Ties are broken by the order of ``weights``.
    """
    if n_images < 0:
        raise ValueError(f"n_images must be >= 0, got {n_images}")
    cats = [c for c, w in weights.items() if w > 0]
    if not cats:
        raise ValueError("class_weights has no category with a positive weight")
    w = np.array([float(weights[c]) for c in cats])
    quota = n_images * w / w.sum()
    counts = np.floor(quota).astype(int)
    rest = n_images - int(counts.sum())
    order = sorted(range(len(cats)), key=lambda i: (-(quota[i] - counts[i]), i))
    for i in order[:rest]:
        counts[i] += 1
    if n_images >= len(cats):
        for i in range(len(cats)):
            if counts[i] == 0:
                donor = max(range(len(cats)), key=lambda j: (counts[j], -j))
                counts[donor] -= 1
                counts[i] += 1
    return {c: int(n) for c, n in zip(cats, counts, strict=True)}


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "little")


def image_rng(seed: int, campaign: str, category: str, index: int) -> np.random.Generator:
    """The random generator of one image, independent of generation order."""
    entropy = [int(seed) & 0xFFFFFFFFFFFFFFFF, _stable_int(campaign), _stable_int(category), int(index)]
    ss = np.random.SeedSequence(entropy)
    return np.random.default_rng(ss)


# --------------------------------------------------------------------------- geometry

# A crystal is a list of components; a component is a list of drawing ops in
# 64-px units around the origin. Ops: ("poly", pts, fill, outline_value, width),
# ("line", pts, value, width), ("disc", centre, radius, value). Values are
# optical densities in [0, 1]. Components combine as transmissions
# (1 - d = prod(1 - d_i)), so overlapping parts look darker.


@dataclass
class _Crystal:
    components: list[list[tuple]]
    outlines: list[np.ndarray]  # closed outlines, used for riming and aggregation

    def points(self) -> np.ndarray:
        pts = []
        for comp in self.components:
            for op in comp:
                if op[0] == "disc":
                    c, r = op[1], op[2]
                    pts.append(c[None, :] + np.array([[-r, -r], [r, r]]))
                else:
                    pts.append(op[1])
        return np.concatenate(pts, axis=0)

    def transformed(self, angle: float = 0.0, scale: float = 1.0, shift=(0.0, 0.0)) -> _Crystal:
        c, s = math.cos(angle), math.sin(angle)
        rot = np.array([[c, -s], [s, c]]) * scale
        t = np.asarray(shift, dtype=float)

        def tp(p: np.ndarray) -> np.ndarray:
            return p @ rot.T + t

        comps = []
        for comp in self.components:
            new: list[tuple] = []
            for op in comp:
                if op[0] == "poly":
                    new.append(("poly", tp(op[1]), op[2], op[3], op[4] * scale))
                elif op[0] == "line":
                    new.append(("line", tp(op[1]), op[2], op[3] * scale))
                else:
                    new.append(("disc", tp(op[1][None, :])[0], op[2] * scale, op[3]))
            comps.append(new)
        return _Crystal(comps, [tp(o) for o in self.outlines])

    def merged(self, other: _Crystal) -> _Crystal:
        return _Crystal(self.components + other.components, self.outlines + other.outlines)


def _rect(length: float, width: float, cx: float = 0.0, cy: float = 0.0) -> np.ndarray:
    hl, hw = length / 2, width / 2
    return np.array([[cx - hl, cy - hw], [cx + hl, cy - hw], [cx + hl, cy + hw], [cx - hl, cy + hw]])


def _blob(rng: np.random.Generator, radius: float, n: int, aspect: float, rough: float, order: int) -> np.ndarray:
    """Closed polygon with radius modulated by a low-order Fourier series plus jitter."""
    t = np.linspace(0.0, 2 * np.pi, n, endpoint=False)
    r = np.ones(n)
    for k in range(2, order + 1):
        r += rng.normal(0.0, rough / k) * np.cos(k * t + rng.uniform(0, 2 * np.pi))
    r = np.clip(r, 0.45, 1.8) * radius
    return np.stack([r * np.cos(t) * aspect, r * np.sin(t)], axis=1)


def _column(rng: np.random.Generator, length: float, width: float, lines: bool = True) -> _Crystal:
    body = _rect(length, width)
    ops: list[tuple] = [("poly", body, rng.uniform(0.62, 0.8), 1.0, rng.uniform(1.2, 1.8))]
    if lines and width >= 5:
        off = width * rng.uniform(0.15, 0.28)
        inner = rng.uniform(0.85, 0.97)
        lw = rng.uniform(0.7, 1.1)
        for y in (-off, off):
            ops.append(("line", np.array([[-length / 2, y], [length / 2, y]]), inner, lw))
    return _Crystal([ops], [body])


def _make_column(rng: np.random.Generator) -> _Crystal:
    width = rng.uniform(7.0, 12.0)
    length = width * rng.uniform(2.8, 5.5)
    length = min(length, 52.0)
    return _column(rng, length, width)


def _make_plate(rng: np.random.Generator) -> _Crystal:
    radius = rng.uniform(13.0, 22.0)
    t = np.arange(6) * np.pi / 3 + rng.uniform(0, np.pi / 3)
    squash = rng.uniform(0.6, 1.0)
    hexa = np.stack([np.cos(t), np.sin(t) * squash], axis=1)
    outer = hexa * radius
    ops: list[tuple] = [("poly", outer, rng.uniform(0.4, 0.6), 1.0, rng.uniform(1.8, 2.8))]
    inner = hexa * radius * rng.uniform(0.45, 0.7)
    ops.append(("poly", inner, None, rng.uniform(0.78, 0.92), rng.uniform(0.9, 1.4)))
    if rng.random() < 0.6:
        v = rng.uniform(0.72, 0.9)
        for p in outer:
            ops.append(("line", np.array([[0.0, 0.0], p * 0.92]), v, 0.9))
    return _Crystal([ops], [outer])


def _make_lollipop(rng: np.random.Generator) -> _Crystal:
    width = rng.uniform(5.0, 8.5)
    length = width * rng.uniform(3.0, 5.0)
    length = min(length, 36.0)
    col = _column(rng, length, width, lines=rng.random() < 0.5)
    r = width * rng.uniform(1.0, 1.5)
    cx = length / 2 + r * rng.uniform(0.3, 0.7)
    drop = _blob(rng, r, 28, rng.uniform(0.9, 1.1), 0.05, 3) + np.array([cx, 0.0])
    ops = [("poly", drop, 1.0, 1.0, 1.0)]
    # Centre the whole lollipop.
    out = col.merged(_Crystal([ops], [drop]))
    return out.transformed(shift=(-r * 0.5, 0.0))


def _make_droplet(rng: np.random.Generator) -> _Crystal:
    r = rng.uniform(7.0, 12.0)
    drop = _blob(rng, r, 32, rng.uniform(0.8, 0.97), 0.06, 3)
    ops: list[tuple] = [("poly", drop, 1.0, 1.0, 1.0)]
    comp = _Crystal([ops], [drop])
    if rng.random() < 0.8:
        spot = np.array(rng.normal(0.0, 0.08 * r, 2))
        ops.append(("disc", spot, r * rng.uniform(0.14, 0.28), rng.uniform(0.25, 0.55)))
    return comp


def _make_irregular(rng: np.random.Generator) -> _Crystal:
    r = rng.uniform(11.0, 19.0)
    n = int(rng.integers(12, 22))
    poly = _blob(rng, r, n, rng.uniform(0.6, 1.0), 0.35, 4)
    poly = poly * rng.uniform(0.75, 1.2, size=(n, 1))  # jagged vertices
    ops: list[tuple] = [("poly", poly, rng.uniform(0.7, 0.9), 1.0, rng.uniform(1.0, 1.6))]
    for _ in range(int(rng.integers(1, 4))):  # internal facets
        a, b = poly[rng.integers(0, n, 2)] * 0.7
        ops.append(("line", np.stack([a, b]), rng.uniform(0.85, 1.0), rng.uniform(0.8, 1.4)))
    return _Crystal([ops], [poly])


def _make_small(rng: np.random.Generator) -> _Crystal:
    r = rng.uniform(1.5, 3.0)
    poly = _blob(rng, r, 10, rng.uniform(0.75, 1.0), 0.12, 3)
    return _Crystal([[("poly", poly, 1.0, 1.0, 0.5)]], [poly])


def _make_cpc(rng: np.random.Generator) -> _Crystal:
    width = rng.uniform(5.0, 9.0)
    length = width * rng.uniform(2.2, 3.8)
    col = _column(rng, length, width, lines=rng.random() < 0.5)
    ops = []
    caps = []
    span = width * rng.uniform(2.2, 3.4)
    for sign in (-1.0, 1.0):
        thick = rng.uniform(2.2, 3.6)
        s = span * rng.uniform(0.85, 1.15)
        cap = _rect(thick, s, cx=sign * (length / 2 + thick / 2 - 0.6))
        ops.append(("poly", cap, rng.uniform(0.85, 1.0), 1.0, 1.0))
        caps.append(cap)
    return col.merged(_Crystal([ops], caps))


_MAKERS = {
    "column": _make_column,
    "plate": _make_plate,
    "lollipop": _make_lollipop,
    "droplet": _make_droplet,
    "irregular": _make_irregular,
    "small": _make_small,
    "cpc": _make_cpc,
}
assert set(_MAKERS) == set(BASIC_HABITS)

# Partners of aggregates other than the base habit (relative weights).
# "small" is left out: a tiny partner would make the aggregate look like its basic habit.
_PARTNERS = ("column", "plate", "droplet", "irregular", "lollipop", "cpc")
_PARTNER_W = np.array([0.32, 0.22, 0.18, 0.16, 0.06, 0.06])


def _resample(outline: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray]:
    """Points every ``spacing`` along a closed outline, with outward normals."""
    nxt = np.roll(outline, -1, axis=0)
    seg = nxt - outline
    seglen = np.hypot(seg[:, 0], seg[:, 1])
    total = seglen.sum()
    n = max(int(total / spacing), 3)
    s = (np.arange(n) + 0.5) * total / n
    cum = np.concatenate([[0.0], np.cumsum(seglen)])
    idx = np.clip(np.searchsorted(cum, s, side="right") - 1, 0, len(outline) - 1)
    frac = (s - cum[idx]) / np.maximum(seglen[idx], 1e-9)
    pts = outline[idx] + seg[idx] * frac[:, None]
    tang = seg[idx] / np.maximum(seglen[idx], 1e-9)[:, None]
    normal = np.stack([tang[:, 1], -tang[:, 0]], axis=1)
    centre = outline.mean(axis=0)
    flip = np.einsum("ij,ij->i", normal, pts - centre) < 0
    normal[flip] *= -1
    return pts, normal


def _rime(rng: np.random.Generator, crystal: _Crystal) -> _Crystal:
    """Freeze many small droplets along the outlines (and a few on the faces)."""
    spacing = rng.uniform(1.8, 2.8)
    keep = rng.uniform(0.7, 0.95)
    ops: list[tuple] = []
    for outline in crystal.outlines:
        pts, normal = _resample(outline, spacing)
        n = len(pts)
        radius = rng.uniform(0.9, 2.0, n)
        offset = rng.uniform(-0.2, 0.9, n) * radius
        centres = pts + normal * offset[:, None]
        mask = rng.random(n) < keep
        for c, r in zip(centres[mask], radius[mask], strict=True):
            ops.append(("disc", c, float(r), float(rng.uniform(0.8, 1.0))))
        # A few frozen droplets on the faces give a textured interior.
        centre = outline.mean(axis=0)
        for _ in range(int(rng.integers(0, 4))):
            p = outline[rng.integers(0, len(outline))]
            c = centre + (p - centre) * rng.uniform(0.1, 0.7)
            ops.append(("disc", c, float(rng.uniform(0.8, 1.5)), float(rng.uniform(0.4, 0.7))))
    return _Crystal(crystal.components + [ops], crystal.outlines)


def _attach(rng: np.random.Generator, base: _Crystal, partner: _Crystal) -> _Crystal:
    """Move ``partner`` so that it touches/overlaps a random point of ``base``'s outline."""
    outline = base.outlines[int(rng.integers(0, len(base.outlines)))]
    pts, normal = _resample(outline, 1.0)
    i = int(rng.integers(0, len(pts)))
    anchor, u = pts[i], normal[i]
    # Blend the local normal with the direction from the crystal centre, so partners
    # stick out of the aggregate rather than into it.
    centre = base.points().mean(axis=0)
    radial = anchor - centre
    nr = np.hypot(*radial)
    if nr > 1e-6:
        u = u + radial / nr
    u = u / max(np.hypot(*u), 1e-9)
    ppts = partner.points()
    contact = ppts[np.argmin(ppts @ u)]
    overlap = rng.uniform(0.5, 3.5)
    return partner.transformed(shift=anchor - contact - u * overlap)


def _build(category: str, rng: np.random.Generator) -> _Crystal:
    base, aged, aggregate = _parse_category(category)
    crystal = _MAKERS[base](rng).transformed(angle=rng.uniform(0, 2 * np.pi))
    if aggregate:
        crystal = crystal.transformed(scale=rng.uniform(0.8, 0.95))
        n_partners = 1 if rng.random() < 0.65 else 2
        for _ in range(n_partners):
            if rng.random() < 0.4:
                habit = base
            else:
                habit = _PARTNERS[int(rng.choice(len(_PARTNERS), p=_PARTNER_W))]
            partner = _MAKERS[habit](rng).transformed(angle=rng.uniform(0, 2 * np.pi), scale=rng.uniform(0.5, 0.8))
            crystal = crystal.merged(_attach(rng, crystal, partner))
    if aged:
        crystal = _rime(rng, crystal)
    return crystal


# --------------------------------------------------------------------------- rendering


def _draw_density(crystal: _Crystal, size: int) -> np.ndarray:
    """Optical density in [0, 1] at ``size`` px, drawn supersampled for antialiasing."""
    ss = 2 if size >= 64 else int(math.ceil(128 / size))
    canvas = size * ss
    k = canvas / _UNIT_SIZE
    transmission = np.ones((canvas, canvas), dtype=np.float32)
    for comp in crystal.components:
        img = Image.new("L", (canvas, canvas), 0)
        draw = ImageDraw.Draw(img)
        for op in comp:
            kind = op[0]
            if kind == "poly":
                _, pts, fill, outline, width = op
                xy = [tuple(p) for p in (pts * k)]
                w = max(1, int(round(width * k)))
                if fill is not None:
                    draw.polygon(xy, fill=int(round(fill * 255)))
                if outline is not None:
                    draw.line(xy + [xy[0]], fill=int(round(outline * 255)), width=w, joint="curve")
            elif kind == "line":
                _, pts, value, width = op
                xy = [tuple(p) for p in (pts * k)]
                draw.line(xy, fill=int(round(value * 255)), width=max(1, int(round(width * k))))
            else:
                _, c, r, value = op
                cx, cy = c * k
                rr = max(r * k, 0.5)
                draw.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], fill=int(round(value * 255)))
        transmission *= 1.0 - np.asarray(img, dtype=np.float32) * (1.0 / 255.0)
    density = 1.0 - transmission
    return density.reshape(size, ss, size, ss).mean(axis=(1, 3))


def _place(crystal: _Crystal, rng: np.random.Generator) -> _Crystal:
    """Shrink the crystal to fit the frame if needed, then centre it with jitter."""
    pts = crystal.points()
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    extent = float((hi - lo).max())
    limit = _UNIT_SIZE * 0.86
    scale = min(1.0, limit / max(extent, 1e-6))
    centre = (lo + hi) / 2
    crystal = crystal.transformed(scale=scale, shift=-centre * scale)
    half = (hi - lo) * scale / 2
    room = np.maximum(_UNIT_SIZE / 2 - 2.0 - half, 0.0)
    jitter = rng.uniform(-1.0, 1.0, 2) * np.minimum(room, _UNIT_SIZE * 0.08)
    return crystal.transformed(shift=jitter + _UNIT_SIZE / 2)


def render_crystal(category: str, rng: np.random.Generator, size: int, style: CampaignStyle) -> np.ndarray:
    """One ``(size, size)`` uint8 image of a crystal of ``category`` in ``style``."""
    if size < 16:
        raise ValueError(f"size must be >= 16 px, got {size}")
    crystal = _place(_build(category, rng), rng)
    density = _draw_density(crystal, size)
    px = size / _UNIT_SIZE  # image pixels per 64-px unit

    # Per-image variation of the campaign style.
    bg_level = style.background + rng.normal(0.0, 0.02)
    contrast = style.contrast * rng.uniform(0.9, 1.05)
    blur = style.blur_sigma * rng.uniform(0.7, 1.3) * px
    noise = style.noise_sigma * rng.uniform(0.8, 1.2)
    fringe_amp = style.fringe_strength * rng.uniform(0.7, 1.3)

    # Background: level, linear gradient and low-frequency unevenness.
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
    a = rng.uniform(0, 2 * np.pi)
    bg = bg_level + style.gradient * rng.uniform(0.3, 1.0) * (np.cos(a) * xx + np.sin(a) * yy)
    for _ in range(3):
        f = rng.uniform(0.5, 1.8)
        b = rng.uniform(0, 2 * np.pi)
        phase = 2 * np.pi * f * (np.cos(b) * xx + np.sin(b) * yy) + rng.uniform(0, 2 * np.pi)
        bg = bg + style.gradient * 0.35 * np.cos(phase)

    # Holographic fringes: rings following the outline, fading with distance.
    mask = density > 0.3
    if mask.any() and fringe_amp > 0:
        dist = ndimage.distance_transform_edt(~mask).astype(np.float32) / px
        period = style.fringe_period * rng.uniform(0.85, 1.15)
        decay = rng.uniform(3.5, 6.0)
        fringe = np.cos(2 * np.pi * dist / period) * np.exp(-dist / decay)
        fringe[mask] = 0.0
    else:
        fringe = np.zeros((size, size), dtype=np.float32)

    obj = density.astype(np.float32)
    if blur > 0.05:
        obj = ndimage.gaussian_filter(obj, blur, mode="constant")
        fringe = ndimage.gaussian_filter(fringe, max(blur * 0.6, 0.3), mode="constant")
    img = bg * (1.0 - contrast * obj + fringe_amp * fringe)

    # Noise: white plus a little speckle (spatially correlated).
    white = rng.standard_normal((size, size)).astype(np.float32)
    speckle = ndimage.gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), 1.0 * px + 0.3)
    speckle *= 1.0 / max(float(speckle.std()), 1e-6)
    img = img + noise * (0.75 * white + 0.65 * speckle)
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


# --------------------------------------------------------------------------- campaigns


def _style_for(campaign: str, style: CampaignStyle | None) -> CampaignStyle:
    if style is not None:
        if not isinstance(style, CampaignStyle):
            raise TypeError(f"style for campaign '{campaign}' must be a CampaignStyle, got {type(style).__name__}")
        return style
    if campaign not in CAMPAIGN_PRESETS:
        raise ValueError(
            f"unknown campaign '{campaign}' and no style given; known presets are "
            f"{sorted(CAMPAIGN_PRESETS)} (or pass a CampaignStyle)"
        )
    return CAMPAIGN_PRESETS[campaign]


def generate_campaign(
    campaign: str,
    n_images: int,
    size: int,
    seed: int,
    style: CampaignStyle | None = None,
) -> Iterator[tuple[str, np.ndarray]]:
    """Yield ``(category, image)`` for ``n_images`` images of one campaign.

    Per-class counts come from :func:`class_counts` on the style's weights; images
    come class by class in the order of ``class_weights``, index 0, 1, ... within a
    class. Image ``i`` of a class is the same whatever ``n_images`` is.
    """
    st = _style_for(campaign, style)
    counts = class_counts(st.class_weights, n_images)
    for category, n in counts.items():
        for i in range(n):
            yield category, render_crystal(category, image_rng(seed, campaign, category, i), size, st)


def _spec(campaigns: Mapping[str, int], size: int, seed: int, styles: Mapping[str, CampaignStyle]) -> dict:
    return {
        "generator": "raystudy.data.synthetic",
        "version": GENERATOR_VERSION,
        "size": int(size),
        "seed": int(seed),
        "campaigns": {
            name: {
                "n_images": int(n),
                "style": styles[name].to_dict(),
                "counts": class_counts(styles[name].class_weights, int(n)),
            }
            for name, n in campaigns.items()
        },
    }


def spec_hash(spec: Mapping) -> str:
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode("utf-8")).hexdigest()


def _read_marker(root: Path) -> dict | None:
    try:
        return json.loads((root / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return None


def _checked_styles(
    campaigns: Mapping[str, int], size: int, styles: Mapping[str, CampaignStyle] | None
) -> dict[str, CampaignStyle]:
    """The style of every campaign (given or preset), after checking names, counts and size."""
    if not campaigns:
        raise ValueError("campaigns is empty; give at least one campaign name and image count")
    if isinstance(size, bool) or int(size) != size or size < 16:
        raise ValueError(f"size must be an integer >= 16, got {size}")
    given = dict(styles or {})
    resolved = {}
    for name, n in campaigns.items():
        if int(n) != n or n < 0:
            raise ValueError(f"image count for campaign '{name}' must be an integer >= 0, got {n}")
        if "/" in name or "\\" in name or name in ("", ".", ".."):
            raise ValueError(f"campaign name '{name}' is not a valid folder name")
        resolved[name] = _style_for(name, given.get(name))
    return resolved


def _holds_dataset(root: Path, digest: str) -> bool:
    """Whether ``root`` already holds the data set of spec hash ``digest`` (refuses other contents)."""
    if not root.exists():
        return False
    marker = _read_marker(root)
    if marker is not None and marker.get("hash") == digest:
        return True
    if not root.is_dir():
        raise ValueError(f"{root} exists and is not a folder; pick another folder for the synthetic data set")
    if any(root.iterdir()):
        why = (
            "a synthetic data set of a different spec"
            if (root / MARKER_NAME).exists()
            else "other data (no synthetic-data marker)"
        )
        raise ValueError(
            f"{root} is not empty and holds {why}; pick another folder or delete it "
            "to generate the synthetic data set there"
        )
    return False


def _write_images(
    folder: Path, campaigns: Mapping[str, int], size: int, seed: int, styles: Mapping[str, CampaignStyle]
) -> None:
    """Render every campaign's images into ``folder/<campaign>/<category>/``."""
    for campaign, n in campaigns.items():
        next_index: dict[str, int] = {}
        for category, img in generate_campaign(campaign, int(n), size, seed, styles[campaign]):
            index = next_index.get(category, 0)
            next_index[category] = index + 1
            target = folder / campaign / category
            if index == 0:
                target.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(target / f"{campaign}_{category}_{index:05d}.png")


def generate_dataset(
    root: Path,
    campaigns: dict[str, int],
    size: int = 64,
    seed: int = 0,
    styles: dict[str, CampaignStyle] | None = None,
) -> Path:
    """Write ``root/<campaign>/<category>/<campaign>_<category>_<index:05d>.png``.

    ``campaigns`` maps campaign names to image counts; ``styles`` overrides or adds
    campaign styles (campaigns without one use :data:`CAMPAIGN_PRESETS`). Returns
    ``root``. If ``root`` already holds a data set of the same spec (marker
    ``root/.synthetic.json`` with the same hash), nothing is touched. A non-empty
    ``root`` holding anything else raises :class:`ValueError`. Files are written to
    a sibling temporary folder and moved into place at the end, so an interrupted
    run never leaves a half-written data set at ``root``.
    """
    root = Path(root)
    resolved = _checked_styles(campaigns, size, styles)
    spec = _spec(campaigns, size, seed, resolved)
    digest = spec_hash(spec)
    if _holds_dataset(root, digest):
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        tmp.mkdir()
        _write_images(tmp, campaigns, size, seed, resolved)
        (tmp / MARKER_NAME).write_text(json.dumps({"hash": digest, "spec": spec}, indent=1, sort_keys=True))
        try:
            os.replace(tmp, root)
        except OSError:
            # Someone else filled root meanwhile; fine if it is the same data set.
            marker = _read_marker(root)
            if marker is not None and marker.get("hash") == digest:
                shutil.rmtree(tmp, ignore_errors=True)
                return root
            raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return root
