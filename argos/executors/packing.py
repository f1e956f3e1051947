"""Region geometry and bin-packing for the ``packed_crops`` executor.

Everything here works in integer *network pixels*: the coordinates of the letterboxed frame the
detector would see in a full-frame run. Boxes are ``x1, y1, x2, y2`` with exclusive ends; sizes
are ``(w, h)``; canvas shapes are ``(h, w)`` like tensors.

The steps, in the order the executor calls them:

1. :func:`expand_boxes` adds context around each proposed box;
2. :func:`snap_boxes` grows boxes outward to a grid of ``align`` pixels, so a crop keeps the
   same phase against the detector's stride grid as in the full frame;
3. :func:`merge_boxes` merges boxes whose bounding box costs no more than the two apart;
4. :func:`pack` / :func:`choose_and_pack` place the crops on canvases with a guillotine packer
   that reproduces ``rectpack``'s placements (:func:`_guillotine_pack`).
"""
from __future__ import annotations

import math
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
    """A rectangle could not be placed (larger than the canvas)."""


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


def _work_dtype(b: np.ndarray, gap: int) -> type:
    """int32 when every cost and saving of boxes within ``b``'s range fits it, else int64.

    Unions span at most ``2 * max|coord| + gap`` per side, and savings reach at most twice the
    largest union cost. Half-size arrays matter: the K x K pair matrices of 200 boxes took about
    a ninth of the int64 time (memory traffic and allocation of the temporaries).
    """
    span = 2 * int(np.abs(b).max(initial=0)) + gap
    return np.int32 if 2 * span * span < 2**31 else np.int64


# Below any real saving: marks the diagonal and merged-away boxes in the saving matrices.
_NEVER = {np.dtype(np.int32): int(np.iinfo(np.int32).min), np.dtype(np.int64): int(np.iinfo(np.int64).min)}


def _costs(x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray, gap: int) -> np.ndarray:
    return (x2 - x1 + gap) * (y2 - y1 + gap)


def _pair_savings(x1: np.ndarray, y1: np.ndarray, x2: np.ndarray, y2: np.ndarray, cost: np.ndarray, gap: int):
    """ndarray[K, K]: ``cost_i + cost_j - cost(union_ij)``, the dtype's minimum on the diagonal.

    Takes the box columns (contiguous ndarray[K] each); reuses its temporaries in place.
    """
    uw = np.maximum(x2[:, None], x2)
    uw -= np.minimum(x1[:, None], x1)
    uw += gap
    uh = np.maximum(y2[:, None], y2)
    uh -= np.minimum(y1[:, None], y1)
    uh += gap
    uw *= uh  # union costs
    saving = np.add(cost[:, None], cost, out=uh)
    saving -= uw
    np.fill_diagonal(saving, _NEVER[saving.dtype])
    return saving


def _columns(b: np.ndarray) -> List[np.ndarray]:
    return [np.ascontiguousarray(b[:, k]) for k in range(4)]


def _merge_mutual_best(b: np.ndarray, gap: int) -> np.ndarray:
    """One round: merge every pair whose members are each other's best partner (saving >= 0)."""
    x1, y1, x2, y2 = _columns(b)
    saving = _pair_savings(x1, y1, x2, y2, _costs(x1, y1, x2, y2, gap), gap)
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
    n = len(b)
    if n < 2:
        return b.copy()
    x1, y1, x2, y2 = _columns(b)
    cost = _costs(x1, y1, x2, y2, gap)
    saving = _pair_savings(x1, y1, x2, y2, cost, gap)
    never = _NEVER[saving.dtype]
    dead = np.zeros(n, bool)
    row_arg = saving.argmax(1)
    row_best = saving[np.arange(n), row_arg]
    while True:
        i = int(row_best.argmax())
        if row_best[i] < 0:
            break
        j = int(row_arg[i])
        x1[i], y1[i] = min(x1[i], x1[j]), min(y1[i], y1[j])
        x2[i], y2[i] = max(x2[i], x2[j]), max(y2[i], y2[j])
        cost[i] = (x2[i] - x1[i] + gap) * (y2[i] - y1[i] + gap)
        dead[j] = True
        saving[j, :] = saving[:, j] = never
        # A dead row's best partner is never i or j (so it is never stale) nor beaten by ``new``.
        row_best[j], row_arg[j] = never, -1
        uw = np.maximum(x2, x2[i])
        uw -= np.minimum(x1, x1[i])
        uw += gap
        uh = np.maximum(y2, y2[i])
        uh -= np.minimum(y1, y1[i])
        uh += gap
        uw *= uh
        new = cost + cost[i]
        new -= uw
        new[dead] = never
        new[i] = never
        saving[i, :] = saving[:, i] = new
        row_arg[i] = int(new.argmax())
        row_best[i] = new[row_arg[i]]
        # Rows whose best partner was i or j must look again; the others only compare with i.
        stale = np.flatnonzero((row_arg == i) | (row_arg == j))
        stale = stale[stale != i]
        if len(stale):
            row_arg[stale] = saving[stale].argmax(1)
            row_best[stale] = saving[stale, row_arg[stale]]
        better = new > row_best
        row_best[better] = new[better]
        row_arg[better] = i
    return np.stack([x1, y1, x2, y2], 1)[~dead].astype(b.dtype)


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
    if len(b) == 0:
        return b
    b = b.astype(_work_dtype(b, gap))
    while len(b) > 16:
        merged = _merge_mutual_best(b, gap)
        done = len(b) - len(merged)
        b = merged
        if done < len(b) // 8:  # few pairs per round (e.g. a chain): the incremental loop is cheaper
            break
    return _merge_best_first(b, gap).astype(np.int64)


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


def _guillotine_pack(
    units: Sequence[Tuple[int, int]], order: Sequence[int], W: int, H: int, max_bins: Optional[int] = None
) -> Optional[Tuple[List[int], List[int], List[int]]]:
    """Offline guillotine packing onto bins of ``W x H``, without rotation.

    The heuristics of ``rectpack``'s ``GuillotineBafSas`` with ``PackerBNF`` (one open bin at a
    time, area-sorted input), written with plain lists: ``rectpack`` builds objects and
    properties for every free-section test, which made it most of the planning time. The
    placements are the same as ``rectpack``'s (the tests compare them):

    - rectangles go in the given ``order`` into the open bin; one that fits no free section
      closes the bin and opens a new one;
    - the free section with the least area left over wins (the first one on ties);
    - the rectangle sits in that section's corner and the section is split along its shorter
      axis (horizontal cut when it is taller than wide);
    - each new free section absorbs every free section it contains or that contains it, or
      that it continues exactly along one axis, until nothing more joins.

    Args:
        units: ``(w, h)`` of each rectangle, every one at most ``W x H``.
        order: indices into ``units``, the packing order.
        max_bins: give up (return ``None``) once more bins than this are needed.

    Returns:
        ``(bin, x, y)`` lists, one entry per rectangle in ``units`` order; ``None`` when given up.
    """
    k = len(units)
    if any(w > W or h > H for w, h in units):
        raise PackingError(f"a rectangle is larger than the bin (w, h) = {(W, H)}")  # it would open bins forever
    bins, xs, ys = [0] * k, [0] * k, [0] * k
    n_bins = 0
    free: Optional[List[List[int]]] = None  # free sections [x, y, w, h] of the open bin
    for i in order:
        w, h = units[i]
        while True:
            if free is None:
                n_bins += 1
                if max_bins is not None and n_bins > max_bins:
                    return None
                free = [[0, 0, W, H]]
            best, best_fit = -1, 0
            for j, (_, _, sw, sh) in enumerate(free):
                if w <= sw and h <= sh:
                    fit = sw * sh - w * h
                    if best < 0 or fit < best_fit:
                        best, best_fit = j, fit
            if best >= 0:
                break
            free = None  # nothing fits: close the bin
        sx, sy, sw, sh = free.pop(best)
        bins[i], xs[i], ys[i] = n_bins - 1, sx, sy
        if sw < sh:  # cut along the rectangle's top edge
            if h < sh:
                free = _add_free(free, [sx, sy + h, sw, sh - h])
            if w < sw:
                free = _add_free(free, [sx + w, sy, sw - w, h])
        else:  # cut along its right edge
            if h < sh:
                free = _add_free(free, [sx, sy + h, w, sh - h])
            if w < sw:
                free = _add_free(free, [sx + w, sy, sw - w, sh])
    return bins, xs, ys


def _add_free(free: List[List[int]], new: List[int]) -> List[List[int]]:
    """Add the free section ``new`` to ``free``, joining it with the sections it can absorb.

    Passes over ``free`` repeat until one joins nothing, since a grown ``new`` may now continue
    a section it skipped; ``new`` goes last, as in ``rectpack``.
    """
    n = -1
    while free and n != len(free):
        n = len(free)
        free = [s for s in free if not _join(new, s)]
    free.append(new)
    return free


def _join(a: List[int], b: List[int]) -> bool:
    """Grow ``a`` (in place) to the union with ``b`` when that union is a rectangle holding both."""
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    if bx >= ax and by >= ay and bx + bw <= ax + aw and by + bh <= ay + ah:  # a holds b
        return True
    if ax >= bx and ay >= by and ax + aw <= bx + bw and ay + ah <= by + bh:  # b holds a
        a[:] = b
        return True
    if ay > by + bh or ay + ah < by or ax > bx + bw or ax + aw < bx:  # apart, not even touching
        return False
    if ax == bx and aw == bw:  # one above the other
        y1 = min(ay, by)
        a[1], a[3] = y1, max(ay + ah, by + bh) - y1
        return True
    if ay == by and ah == bh:  # side by side
        x1 = min(ax, bx)
        a[0], a[2] = x1, max(ax + aw, bx + bw) - x1
        return True
    return False


def _area_order(units: np.ndarray) -> List[int]:
    """Largest area first, ties in input order (``rectpack``'s ``SORT_AREA``, a stable sort)."""
    area = (units[:, 0] * units[:, 1]).tolist()
    return sorted(range(len(area)), key=area.__getitem__, reverse=True)


def _to_packing(canvas_hw: Tuple[int, int], align: int, placed: Tuple[List[int], List[int], List[int]]) -> Packing:
    bins, xs, ys = placed
    canvas_index = np.asarray(bins, np.int64)
    positions = np.column_stack([xs, ys]).astype(np.int64) * align
    return Packing(canvas_hw, int(canvas_index.max()) + 1, canvas_index, positions)


def _bins(canvas_hw: Tuple[int, int], g: int, align: int) -> Tuple[int, int]:
    """``(w, h)`` of a canvas in grid units, one gap larger: each rectangle carries its gap on the
    right/bottom, and crops may still touch the far canvas edge."""
    return canvas_hw[1] // align + g, canvas_hw[0] // align + g


def pack(sizes, canvas_hw: Tuple[int, int], gap: int = 0, align: int = 1) -> Packing:
    """Pack rectangles onto as few canvases of one shape as the guillotine heuristic finds, without rotation.

    Crops are placed on a grid of ``align`` pixels with at least ``gap`` pixels between any two;
    the gap is not needed between a crop and the canvas edge. The placements are those of
    ``rectpack`` (offline, ``PackerBNF``, ``GuillotineBafSas``, ``SORT_AREA``); see
    :func:`_guillotine_pack`.

    Args:
        sizes (ndarray[K, 2] int): ``(w, h)`` of each crop, pixels.
        canvas_hw: ``(h, w)``, multiples of ``align``.

    Returns:
        :class:`Packing` with one entry per crop, in input order.

    Raises:
        PackingError: a crop is larger than the canvas.
    """
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
    units, g = _units(s, align, gap)
    bw, bh = _bins((H, W), g, align)
    placed = _guillotine_pack(units.tolist(), _area_order(units), bw, bh)
    assert placed is not None  # no canvas limit
    return _to_packing((H, W), align, placed)


def _canvas_limit(canvas_area: int, best: Optional[Packing], budget: Optional[float]) -> Optional[int]:
    """Most canvases of ``canvas_area`` a packing may use and still beat ``best`` and fit ``budget``.

    A packing beats ``best`` with less area, or as much in fewer canvases; one over the budget
    never counts (:func:`choose_and_pack` returns ``None`` rather than a packing over it).
    """
    limit = None
    if best is not None:
        limit = (best.area - 1) // canvas_area
        if best.area % canvas_area == 0 and best.area // canvas_area < best.n_canvases:
            limit = best.area // canvas_area
    if budget is not None and math.isfinite(budget):
        by_budget = int(budget // canvas_area)
        limit = by_budget if limit is None else min(limit, by_budget)
    return limit


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
    bounds = zip(lower[order].tolist(), c[order].tolist())
    order_rects = _area_order(units)  # the same for every canvas shape
    unit_list = units.tolist()
    best: Optional[Packing] = None
    for lb, hw in bounds:
        if budget is not None and lb > budget:
            break
        if best is not None and lb >= best.area:
            break
        # Stop a packing once it needs more canvases than could still win (more area than the
        # best, or as much in as many canvases) or fit the budget: canvases are only ever added.
        placed = _guillotine_pack(
            unit_list, order_rects, *_bins(hw, g, align), _canvas_limit(hw[0] * hw[1], best, budget)
        )
        if placed is None:
            continue
        n = max(placed[0]) + 1
        area = n * hw[0] * hw[1]
        if best is None or (area, n) < (best.area, best.n_canvases):
            best = _to_packing((hw[0], hw[1]), align, placed)
    if best is None or (budget is not None and best.area > budget):
        return None
    return best
