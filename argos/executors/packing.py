"""Region geometry and bin-packing for the ``packed_crops`` executor.

Everything here works in integer *network pixels*: the coordinates of the letterboxed frame the
detector would see in a full-frame run. Boxes are ``x1, y1, x2, y2`` with exclusive ends; sizes
are ``(w, h)``; canvas shapes are ``(h, w)`` like tensors.

The steps, in the order the executor calls them:

1. :func:`expand_boxes` adds context around each proposed box;
2. :func:`snap_boxes` grows boxes outward to a grid of ``align`` pixels, so a crop keeps the
   same phase against the detector's stride grid as in the full frame;
3. :func:`merge_boxes` merges boxes whose bounding box costs no more than the two apart;
4. :func:`pack` / :func:`choose_and_pack` place the crops on canvases with ``rectpack``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "PackingError",
    "Packing",
    "expand_boxes",
    "snap_boxes",
    "merge_boxes",
    "candidate_canvases",
    "pack",
    "choose_and_pack",
]


class PackingError(ValueError):
    """A rectangle could not be placed (larger than the canvas, or dropped by ``rectpack``)."""


def _as_boxes(boxes, dtype=np.float64) -> np.ndarray:
    b = np.asarray(boxes, dtype=dtype)
    if b.size == 0:
        return b.reshape(0, 4)
    if b.ndim != 2 or b.shape[1] != 4:
        raise ValueError(f"boxes must have shape (K, 4), got {b.shape}")
    return b


def expand_boxes(
    boxes, margin: float, margin_rel: float, bounds: Tuple[int, int], origin: Tuple[int, int] = (0, 0)
) -> np.ndarray:
    """Grow boxes by ``margin + margin_rel * side`` on each side and clip them.

    Args:
        boxes (ndarray[K, 4] float): xyxy network pixels.
        margin: absolute margin per side, network pixels.
        margin_rel: margin per side as a share of the box's own width (x) or height (y).
        bounds: ``(h, w)`` of the area boxes are clipped to.
        origin: ``(x, y)`` of the clip area's top-left corner.

    Returns:
        ndarray[K, 4] float64.
    """
    if margin < 0 or margin_rel < 0:
        raise ValueError(f"margins must be >= 0, got margin={margin}, margin_rel={margin_rel}")
    b = _as_boxes(boxes).copy()
    wh = b[:, 2:] - b[:, :2]
    pad = margin + margin_rel * wh
    b[:, :2] -= pad
    b[:, 2:] += pad
    (h, w), (ox, oy) = bounds, origin
    b[:, 0::2] = b[:, 0::2].clip(ox, ox + w)
    b[:, 1::2] = b[:, 1::2].clip(oy, oy + h)
    return b


def snap_boxes(boxes, align: int, bounds: Tuple[int, int]) -> np.ndarray:
    """Grow boxes outward to multiples of ``align`` and clip them to ``[0, w] x [0, h]``.

    Boxes that end up empty (zero width or height, e.g. outside the bounds) are removed.

    Returns:
        ndarray[M, 4] int64, ``M <= K``.
    """
    if align < 1:
        raise ValueError(f"align must be >= 1, got {align}")
    b = _as_boxes(boxes)
    lo = np.floor(b[:, :2] / align + 1e-9) * align
    hi = np.ceil(b[:, 2:] / align - 1e-9) * align
    out = np.concatenate([lo, hi], axis=1).astype(np.int64)
    h, w = bounds
    out[:, 0::2] = out[:, 0::2].clip(0, w)
    out[:, 1::2] = out[:, 1::2].clip(0, h)
    keep = (out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])
    return out[keep]


def _costs(boxes: np.ndarray, gap: int) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0] + gap) * (boxes[:, 3] - boxes[:, 1] + gap)


def _union_costs(box: np.ndarray, boxes: np.ndarray, gap: int) -> np.ndarray:
    x1 = np.minimum(box[0], boxes[:, 0])
    y1 = np.minimum(box[1], boxes[:, 1])
    x2 = np.maximum(box[2], boxes[:, 2])
    y2 = np.maximum(box[3], boxes[:, 3])
    return (x2 - x1 + gap) * (y2 - y1 + gap)


def _pair_savings(b: np.ndarray, cost: np.ndarray, gap: int) -> np.ndarray:
    """ndarray[K, K] float: ``cost_i + cost_j - cost(union_ij)``, ``-inf`` on the diagonal."""
    x1 = np.minimum(b[:, None, 0], b[None, :, 0])
    y1 = np.minimum(b[:, None, 1], b[None, :, 1])
    x2 = np.maximum(b[:, None, 2], b[None, :, 2])
    y2 = np.maximum(b[:, None, 3], b[None, :, 3])
    saving = (cost[:, None] + cost[None, :] - (x2 - x1 + gap) * (y2 - y1 + gap)).astype(np.float64)
    np.fill_diagonal(saving, -np.inf)
    return saving


def _merge_mutual_best(b: np.ndarray, gap: int) -> np.ndarray:
    """One round: merge every pair whose members are each other's best partner (saving >= 0)."""
    saving = _pair_savings(b, _costs(b, gap), gap)
    best = saving.argmax(1)
    idx = np.arange(len(b))
    ok = (best[best] == idx) & (idx < best) & (saving[idx, best] >= 0)
    i, j = idx[ok], best[ok]
    b = b.copy()
    b[i] = np.concatenate([np.minimum(b[i, :2], b[j, :2]), np.maximum(b[i, 2:], b[j, 2:])], axis=1)
    keep = np.ones(len(b), bool)
    keep[j] = False
    return b[keep]


def _merge_best_first(b: np.ndarray, gap: int) -> np.ndarray:
    """Merge the pair with the largest saving until none is >= 0; rows updated incrementally."""
    b = b.copy()
    n = len(b)
    if n < 2:
        return b
    alive = np.ones(n, bool)
    cost = _costs(b, gap)
    saving = _pair_savings(b, cost, gap)
    row_arg = saving.argmax(1)
    row_best = saving[np.arange(n), row_arg]
    while True:
        i = int(row_best.argmax())
        if row_best[i] < 0:
            break
        j = int(row_arg[i])
        b[i] = [min(b[i, 0], b[j, 0]), min(b[i, 1], b[j, 1]), max(b[i, 2], b[j, 2]), max(b[i, 3], b[j, 3])]
        cost[i] = _costs(b[i : i + 1], gap)[0]
        alive[j] = False
        saving[j, :] = saving[:, j] = -np.inf
        row_best[j] = -np.inf
        new = (cost[i] + cost - _union_costs(b[i], b, gap)).astype(np.float64)
        new[~alive] = -np.inf
        new[i] = -np.inf
        saving[i, :] = saving[:, i] = new
        row_arg[i] = int(new.argmax())
        row_best[i] = new[row_arg[i]]
        # Rows whose best partner was i or j must look again; the others only compare with i.
        stale = np.flatnonzero(alive & ((row_arg == i) | (row_arg == j)))
        stale = stale[stale != i]
        if len(stale):
            row_arg[stale] = saving[stale].argmax(1)
            row_best[stale] = saving[stale, row_arg[stale]]
        better = alive & (new > row_best)
        row_best[better] = new[better]
        row_arg[better] = i
    return b[alive]


def merge_boxes(boxes, gap: int = 0) -> np.ndarray:
    """Greedily merge pairs of boxes while their bounding box costs no more than both apart.

    The cost of a box is its area with ``gap`` pixels added to each dimension (the spacing a crop
    takes on a canvas), so overlapping boxes (whose overlap would be processed twice) and nearby
    thin boxes merge, while far-apart ones stay separate. The pair with the largest saving merges
    first. Many boxes (more than 16) first go through rounds that merge all mutually-best pairs at
    once, which is much faster when most of them merge and nearly the same. Every input box lies
    inside one output box.

    Args:
        boxes (ndarray[K, 4] int): xyxy.
        gap: spacing between crops on a canvas, pixels.

    Returns:
        ndarray[M, 4] int64, ``M <= K``.
    """
    b = _as_boxes(boxes, np.int64)
    while len(b) > 16:
        merged = _merge_mutual_best(b, gap)
        done = len(b) - len(merged)
        b = merged
        if done < len(b) // 8:  # few pairs per round (e.g. a chain): the incremental loop is cheaper
            break
    return _merge_best_first(b, gap)


def candidate_canvases(
    img_size: int, stride: int, step: Optional[int] = None, rect: bool = True, native: bool = False
) -> List[Tuple[int, int]]:
    """Canvas shapes ``(h, w)`` to choose from, all multiples of ``stride``, none beyond ``img_size``.

    Args:
        native: the adapter runs images at scale 1 (``preprocess_native``): every ``(h, w)`` with
            both sides multiples of ``step``. Otherwise the adapter letterboxes to ``img_size`` on
            the long side, so only shapes with one side ``img_size`` pass through unscaled: strips
            ``(img_size, k * step)`` and ``(k * step, img_size)``.
        step: granularity of the sides; a multiple of ``stride``. Default: the stride for strips,
            about ``img_size / 10`` rounded to the stride (64 at 640) for native shapes.
        rect: ``False`` for adapters that pad every input to a square (and no native path):
            only ``img_size`` square.
    """
    if img_size % stride:
        raise ValueError(f"img_size {img_size} must be a multiple of stride {stride}")
    if not rect and not native:
        return [(img_size, img_size)]
    if step is None:
        step = stride * max(1, round(img_size / (10 * stride))) if native else stride
    if step % stride or step <= 0:
        raise ValueError(f"step must be a positive multiple of stride {stride}, got {step}")
    sides = list(range(step, img_size + 1, step))
    if sides[-1] != img_size:
        sides.append(img_size)
    if native:
        out = {(h, w) for h in sides for w in sides}
    else:
        out = {(s, img_size) for s in sides} | {(img_size, s) for s in sides}
    return sorted(out, key=lambda hw: (hw[0] * hw[1], -hw[1]))


@dataclass
class Packing:
    """Where each crop goes.

    Attributes:
        canvas_hw: ``(h, w)`` of every canvas.
        n_canvases: number of canvases used.
        canvas_index (ndarray[K] int64): canvas of each crop.
        positions (ndarray[K, 2] int64): ``(x, y)`` of each crop's top-left corner on its canvas.
    """

    canvas_hw: Tuple[int, int]
    n_canvases: int
    canvas_index: np.ndarray
    positions: np.ndarray

    @property
    def area(self) -> int:
        """Total canvas pixels."""
        return self.n_canvases * self.canvas_hw[0] * self.canvas_hw[1]


def _units(sizes: np.ndarray, align: int, gap: int) -> Tuple[np.ndarray, int]:
    g = -(-gap // align)
    return -(-sizes // align) + g, g


def pack(sizes, canvas_hw: Tuple[int, int], gap: int = 0, align: int = 1) -> Packing:
    """Pack rectangles onto as few canvases of one shape as ``rectpack`` finds, without rotation.

    Crops are placed on a grid of ``align`` pixels with at least ``gap`` pixels between any two;
    the gap is not needed between a crop and the canvas edge.

    Args:
        sizes (ndarray[K, 2] int): ``(w, h)`` of each crop, pixels.
        canvas_hw: ``(h, w)``, multiples of ``align``.

    Returns:
        :class:`Packing` with one entry per crop, in input order.

    Raises:
        PackingError: a crop is larger than the canvas, or ``rectpack`` left one out.
    """
    import rectpack

    s = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    H, W = int(canvas_hw[0]), int(canvas_hw[1])
    if H % align or W % align:
        raise ValueError(f"canvas {canvas_hw} must be a multiple of align={align}")
    if (s <= 0).any():
        raise ValueError("crop sizes must be positive")
    k = len(s)
    if k == 0:
        return Packing((H, W), 0, np.zeros(0, np.int64), np.zeros((0, 2), np.int64))
    too_big = (s[:, 0] > W) | (s[:, 1] > H)
    if too_big.any():
        i = int(np.flatnonzero(too_big)[0])
        raise PackingError(f"crop {i} of size (w, h) = {tuple(s[i])} does not fit a canvas of (h, w) = {(H, W)}")
    # Pack in grid units; each rectangle carries its gap on the right/bottom, and the bin is
    # enlarged by one gap so crops may still touch the far canvas edge.
    units, g = _units(s, align, gap)
    packer = rectpack.newPacker(
        mode=rectpack.PackingMode.Offline,
        bin_algo=rectpack.PackingBin.BNF,
        pack_algo=rectpack.GuillotineBafSas,
        sort_algo=rectpack.SORT_AREA,
        rotation=False,
    )
    for i, (w, h) in enumerate(units.tolist()):
        packer.add_rect(w, h, rid=i)
    packer.add_bin(W // align + g, H // align + g, count=float("inf"))
    packer.pack()
    placed = packer.rect_list()
    canvas_index = np.full(k, -1, np.int64)
    positions = np.zeros((k, 2), np.int64)
    for b, x, y, _, _, rid in placed:
        canvas_index[rid] = b
        positions[rid] = (x * align, y * align)
    if (canvas_index < 0).any():
        missing = np.flatnonzero(canvas_index < 0).tolist()
        raise PackingError(f"rectpack left out crops {missing[:10]} (of {k}) on canvas (h, w) = {(H, W)}")
    return Packing((H, W), int(canvas_index.max()) + 1, canvas_index, positions)


def choose_and_pack(
    sizes, candidates: Sequence[Tuple[int, int]], gap: int = 0, align: int = 1, budget: Optional[float] = None
) -> Optional[Packing]:
    """Pack onto the canvas shape (from ``candidates``) that uses the fewest canvas pixels.

    Shapes are tried in order of a lower bound on their total area (whole canvases needed by
    area, and by the crops too wide or too tall to sit two abreast) and the search stops once no
    remaining shape can beat the best packing found, so usually a few packings run. Ties go to
    fewer canvases.

    Args:
        sizes (ndarray[K, 2] int): ``(w, h)`` of each crop, pixels.
        candidates: canvas shapes ``(h, w)``, multiples of ``align``.
        budget: most canvas pixels worth using (e.g. the full frames' area); ``None``: no limit.

    Returns:
        The best :class:`Packing`, or ``None`` when no shape holds every crop within ``budget``.
    """
    s = np.asarray(sizes, dtype=np.int64).reshape(-1, 2)
    if len(s) == 0:
        hw = tuple(candidates[0]) if len(candidates) else (0, 0)
        return Packing(hw, 0, np.zeros(0, np.int64), np.zeros((0, 2), np.int64))
    units, g = _units(s, align, gap)
    uw, uh = units[:, 0], units[:, 1]
    c = np.asarray(candidates, dtype=np.int64).reshape(-1, 2)
    c = c[(c[:, 1] >= s[:, 0].max()) & (c[:, 0] >= s[:, 1].max())]
    if len(c) == 0:
        return None
    bw, bh = c[:, 1] // align + g, c[:, 0] // align + g  # canvas in grid units, one gap wider
    # Canvases needed, at least: by area; and because crops wider (taller) than half a canvas
    # cannot sit side by side (on top of each other), so their heights (widths) add up.
    n_area = -(-int((uw * uh).sum()) // (bw * bh))
    wide = uw[None, :] * 2 > bw[:, None]
    tall = uh[None, :] * 2 > bh[:, None]
    n_wide = -(-(wide * uh[None, :]).sum(1) // bh)
    n_tall = -(-(tall * uw[None, :]).sum(1) // bw)
    n_lb = np.maximum.reduce([np.ones_like(n_area), n_area, n_wide, n_tall])
    lower = n_lb * c[:, 0] * c[:, 1]
    order = np.lexsort((n_lb, lower))
    bounds = [(int(lower[k]), int(n_lb[k]), (int(c[k, 0]), int(c[k, 1]))) for k in order]
    best: Optional[Packing] = None
    for lb, _, hw in bounds:
        if budget is not None and lb > budget:
            break
        if best is not None and lb >= best.area:
            break
        p = pack(s, hw, gap, align)
        if best is None or (p.area, p.n_canvases) < (best.area, best.n_canvases):
            best = p
    if best is None or (budget is not None and best.area > budget):
        return None
    return best
