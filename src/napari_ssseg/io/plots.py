"""Small PNG plots of evaluation results, drawn with Pillow (no matplotlib needed)."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from napari_ssseg.io.atomic import atomic_path

__all__ = ["write_boxplot_png"]


def write_boxplot_png(
    path: str | os.PathLike,
    groups: Mapping[str, Sequence[float]],
    title: str = "DICE",
    size: tuple[int, int] = (360, 480),
) -> Path:
    """Draw a box plot of values in [0, 1] per group and save it as PNG.

    Boxes span the quartiles with the median line (red); whiskers reach the most extreme
    values within 1.5 IQR; other values are drawn as points. Text uses Pillow's default
    font.

    Parameters
    ----------
    path : path-like
        Output ``.png`` (written atomically).
    groups : dict of str to sequence of float
        Group name (e.g. ``WT``) -> values in [0, 1]; NaN and None are left out.
    title : str
    size : (height, width)

    Returns
    -------
    Path
    """
    from PIL import Image, ImageDraw, ImageFont

    h, w = size
    img = Image.new("RGB", (w, h), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    try:
        font = ImageFont.load_default(size=13)
    except TypeError:  # Pillow < 10.1 has a fixed-size bitmap default font
        font = ImageFont.load_default()
    top, bottom, left, right = 40, h - 50, 60, w - 20
    axis_c, box_c, fill_c = (40, 40, 40), (70, 120, 200), (210, 225, 245)

    def ypix(v: float) -> int:
        return int(round(bottom - (bottom - top) * min(max(v, 0.0), 1.0)))

    for tick, label in ((0.0, "0"), (0.5, "0.5"), (1.0, "1")):
        y = ypix(tick)
        for x in range(left + 1, right, 4):
            draw.point((x, y), fill=(200, 200, 200))
        draw.line([(left - 5, y), (left - 1, y)], fill=axis_c)
        draw.text((left - 8, y), label, fill=axis_c, font=font, anchor="rm")
    draw.line([(left, top), (left, bottom)], fill=axis_c)
    draw.line([(left, bottom), (right, bottom)], fill=axis_c)
    draw.text((left, 12), title, fill=axis_c, font=font)
    names = list(groups)
    slot = (right - left) / max(len(names), 1)
    for i, name in enumerate(names):
        cx = int(left + slot * (i + 0.5))
        half = int(min(30, slot * 0.3))
        vals = np.asarray(
            [v for v in groups[name] if v is not None and math.isfinite(v)], dtype=float
        )
        draw.text((cx, bottom + 10), name, fill=axis_c, font=font, anchor="mt")
        draw.text((cx, bottom + 28), f"N={vals.size}", fill=axis_c, font=font, anchor="mt")
        if vals.size == 0:
            continue
        q1, med, q3 = np.percentile(vals, [25, 50, 75])
        iqr = q3 - q1
        inside = vals[(vals >= q1 - 1.5 * iqr) & (vals <= q3 + 1.5 * iqr)]
        lo, hi = float(inside.min()), float(inside.max())
        y1, y3 = ypix(q3), ypix(q1)
        draw.rectangle([cx - half, y1, cx + half, y3], fill=fill_c, outline=box_c)
        ym = ypix(med)
        draw.rectangle([cx - half, ym - 1, cx + half, ym + 1], fill=(220, 60, 40))
        draw.line([(cx, ypix(hi)), (cx, y1)], fill=axis_c)
        draw.line([(cx, y3), (cx, ypix(lo))], fill=axis_c)
        for yy in (ypix(hi), ypix(lo)):
            draw.line([(cx - half // 2, yy), (cx + half // 2, yy)], fill=axis_c)
        for v in vals[(vals < lo) | (vals > hi)]:
            y = ypix(float(v))
            draw.ellipse([cx - 2, y - 2, cx + 2, y + 2], fill=(0, 0, 0))
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return Path(path)
