"""Region geometry and packing for packed_crops: no overlap, no lost region, any count, rectpack's placements."""
import numpy as np
import pytest

from argos.executors.packing import (
    Packing,
    PackingError,
    _canvas_limit,
    _work_dtype,
    candidate_canvases,
    choose_and_pack,
    expand_boxes,
    merge_boxes,
    pack,
    snap_boxes,
)


def random_boxes(rng, n, h, w, max_side=120, min_side=1):
    x1 = rng.integers(0, w - min_side, n)
    y1 = rng.integers(0, h - min_side, n)
    bw = rng.integers(min_side, max_side + 1, n)
    bh = rng.integers(min_side, max_side + 1, n)
    return np.stack([x1, y1, np.minimum(x1 + bw, w), np.minimum(y1 + bh, h)], 1)


def check_packing(p: Packing, sizes, gap, align):
    """Every crop placed once, inside its canvas, on the grid, at least ``gap`` from the others."""
    sizes = np.asarray(sizes).reshape(-1, 2)
    H, W = p.canvas_hw
    k = len(sizes)
    assert p.canvas_index.shape == (k,) and p.positions.shape == (k, 2)
    if k == 0:
        assert p.n_canvases == 0
        return
    assert (p.canvas_index >= 0).all() and (p.canvas_index < p.n_canvases).all()
    assert set(p.canvas_index.tolist()) == set(range(p.n_canvases)), "no empty canvas"
    x1, y1 = p.positions[:, 0], p.positions[:, 1]
    x2, y2 = x1 + sizes[:, 0], y1 + sizes[:, 1]
    assert (x1 >= 0).all() and (y1 >= 0).all() and (x2 <= W).all() and (y2 <= H).all()
    assert (x1 % align == 0).all() and (y1 % align == 0).all()
    for c in range(p.n_canvases):
        idx = np.flatnonzero(p.canvas_index == c)
        a = np.stack([x1[idx], y1[idx], x2[idx], y2[idx]], 1)
        # Grow every crop by the gap on its right/bottom: the grown crops must not overlap.
        g = a.copy()
        g[:, 2:] += gap
        lt = np.maximum(g[:, None, :2], g[None, :, :2])
        rb = np.minimum(g[:, None, 2:], g[None, :, 2:])
        inter = (rb - lt).clip(min=0).prod(-1)
        np.fill_diagonal(inter, 0)
        assert inter.max(initial=0) == 0, f"crops overlap (gap {gap}) on canvas {c}"


# ---------------------------------------------------------------------------------------------
# expand / snap / merge
# ---------------------------------------------------------------------------------------------


def test_expand_adds_absolute_and_relative_margin_and_clips():
    b = np.array([[100, 50, 140, 150], [0, 0, 10, 10]], float)
    out = expand_boxes(b, margin=4, margin_rel=0.25, bounds=(200, 300), origin=(0, 0))
    np.testing.assert_allclose(out[0], [100 - 4 - 10, 50 - 4 - 25, 140 + 14, 150 + 29])
    np.testing.assert_allclose(out[1], [0, 0, 10 + 6.5, 10 + 6.5])
    out = expand_boxes(b, 4, 0.0, bounds=(100, 100), origin=(20, 30))  # content starts at (20, 30)
    np.testing.assert_allclose(out[1], [20, 30, 20, 30])
    np.testing.assert_allclose(out[0], [96, 46, 120, 130])
    with pytest.raises(ValueError, match="margins"):
        expand_boxes(b, -1, 0, (10, 10))


def test_snap_grows_outward_to_grid_and_clips():
    b = np.array([[3.2, 8.0, 17.0, 23.9], [0.0, 0.0, 1.0, 1.0], [60.5, 0, 63, 4], [70, 70, 70, 80]])
    out = snap_boxes(b, 8, bounds=(40, 62))
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [[0, 8, 24, 24], [0, 0, 8, 8], [56, 0, 62, 8]])  # empty box removed
    assert (snap_boxes(b[:2], 1, (40, 62)) == [[3, 8, 17, 24], [0, 0, 1, 1]]).all()
    assert snap_boxes(np.zeros((0, 4)), 8, (10, 10)).shape == (0, 4)


def test_merge_overlapping_and_contained_boxes_but_not_distant_ones():
    b = np.array([[0, 0, 100, 100], [10, 10, 50, 50], [90, 0, 200, 100], [400, 400, 420, 420]])
    out = merge_boxes(b, gap=0)
    assert sorted(map(tuple, out.tolist())) == [(0, 0, 200, 100), (400, 400, 420, 420)]
    # Two thin boxes side by side with a small space: one crop costs less than two with a gap.
    thin = np.array([[0, 0, 10, 100], [12, 0, 22, 100]])
    assert len(merge_boxes(thin, gap=8)) == 1
    assert len(merge_boxes(thin, gap=0)) == 2


def brute_force_merge(boxes, gap):
    """Reference: repeatedly merge the pair with the largest non-negative saving, full recompute."""
    b = [tuple(x) for x in boxes.tolist()]
    cost = lambda x: (x[2] - x[0] + gap) * (x[3] - x[1] + gap)  # noqa: E731
    while len(b) > 1:
        best, pair = -1, None
        for i in range(len(b)):
            for j in range(i + 1, len(b)):
                u = (min(b[i][0], b[j][0]), min(b[i][1], b[j][1]), max(b[i][2], b[j][2]), max(b[i][3], b[j][3]))
                s = cost(b[i]) + cost(b[j]) - cost(u)
                if s > best:
                    best, pair = s, (i, j, u)
        if pair is None:
            break
        i, j, u = pair
        b = [x for k, x in enumerate(b) if k not in (i, j)] + [u]
    return b


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("n", [12, 40])
def test_merge_covers_every_input_and_leaves_nothing_worth_merging(seed, n):
    rng = np.random.default_rng(seed)
    b = random_boxes(rng, n, 480, 640, max_side=150)
    out = merge_boxes(b, gap=8)
    # every input box inside one output box
    inside = (
        (b[:, None, 0] >= out[None, :, 0]) & (b[:, None, 1] >= out[None, :, 1])
        & (b[:, None, 2] <= out[None, :, 2]) & (b[:, None, 3] <= out[None, :, 3])
    )  # fmt: skip
    assert inside.any(1).all()
    # no pair left whose union costs no more than both apart
    cost = (out[:, 2] - out[:, 0] + 8) * (out[:, 3] - out[:, 1] + 8)
    for i in range(len(out)):
        for j in range(i + 1, len(out)):
            u = np.r_[np.minimum(out[i, :2], out[j, :2]), np.maximum(out[i, 2:], out[j, 2:])]
            assert (u[2] - u[0] + 8) * (u[3] - u[1] + 8) > cost[i] + cost[j]
    ref = brute_force_merge(b, 8)
    if n <= 16:
        # the incremental bookkeeping gives the boxes of the naive full-recompute greedy
        assert sorted(map(tuple, out.tolist())) == sorted(ref)
    else:
        # rounds of mutual-best merges first: the same saving, or very nearly
        ref_cost = sum((x[2] - x[0] + 8) * (x[3] - x[1] + 8) for x in ref)
        assert cost.sum() <= 1.02 * ref_cost


def test_merge_a_chain_of_touching_boxes_into_one():
    # Each round of mutual-best merges joins few pairs here; the best-first loop takes over.
    chain = np.array([[20 * i, 0, 20 * i + 20, 40] for i in range(100)])
    np.testing.assert_array_equal(merge_boxes(chain, 0), [[0, 0, 2000, 40]])


@pytest.mark.parametrize("seed", range(4))
def test_merge_is_the_same_with_int32_and_int64_work_arrays(seed):
    # Costs depend on coordinate differences only, so shifting every box far away (which makes
    # the int32 pair matrices unsafe, hence int64) must give the shifted boxes of the int32 run.
    rng = np.random.default_rng(seed)
    b = random_boxes(rng, [10, 40, 200, 300][seed], 480, 640, max_side=100)
    b = (b // 32) * 32 + [0, 0, 32, 32]  # grid boxes, as snap_boxes gives: many equal savings
    off = 10**6
    assert _work_dtype(b, 32) == np.int32 and _work_dtype(b + off, 32) == np.int64
    near, far = merge_boxes(b, 32), merge_boxes(b + off, 32)
    assert near.dtype == far.dtype == np.int64
    np.testing.assert_array_equal(far - off, near)


def test_merge_handles_zero_one_and_1000_boxes():
    assert merge_boxes(np.zeros((0, 4)), 8).shape == (0, 4)
    np.testing.assert_array_equal(merge_boxes(np.array([[1, 2, 3, 4]]), 8), [[1, 2, 3, 4]])
    rng = np.random.default_rng(0)
    b = random_boxes(rng, 1000, 480, 640, max_side=20)
    out = merge_boxes(b, 8)
    assert 0 < len(out) < 1000
    inside = (
        (b[:, None, 0] >= out[None, :, 0]) & (b[:, None, 1] >= out[None, :, 1])
        & (b[:, None, 2] <= out[None, :, 2]) & (b[:, None, 3] <= out[None, :, 3])
    )  # fmt: skip
    assert inside.any(1).all()


# ---------------------------------------------------------------------------------------------
# canvases and packing
# ---------------------------------------------------------------------------------------------


def test_candidate_canvases_are_stride_multiples_with_long_side_img_size():
    c = candidate_canvases(640, 32)
    assert (32, 640) in c and (640, 32) in c and (640, 640) in c
    assert all(max(h, w) == 640 and h % 32 == 0 and w % 32 == 0 for h, w in c)
    assert len(c) == len(set(c)) == 39
    assert candidate_canvases(640, 32, rect=False) == [(640, 640)]
    assert all(max(hw) == 320 for hw in candidate_canvases(320, 32, step=64))
    with pytest.raises(ValueError, match="multiple of stride"):
        candidate_canvases(650, 32)
    with pytest.raises(ValueError, match="step"):
        candidate_canvases(640, 32, step=48)


def test_native_candidate_canvases_are_a_grid_of_stride_multiples():
    c = candidate_canvases(640, 32, native=True)
    assert len(c) == len(set(c)) == 100  # sides 64, 128, ..., 640
    assert (64, 64) in c and (192, 448) in c and (640, 640) in c
    assert all(h % 64 == 0 and w % 64 == 0 and max(h, w) <= 640 for h, w in c)
    areas = [h * w for h, w in c]
    assert areas == sorted(areas)
    # Native canvases never need the square fallback of non-rect letterboxing.
    assert candidate_canvases(640, 32, rect=False, native=True) == c
    assert len(candidate_canvases(96, 32, native=True)) == 9


@pytest.mark.parametrize("n", [0, 1, 10, 200, 1000])
@pytest.mark.parametrize("gap,align", [(0, 1), (8, 8), (5, 4)])
def test_pack_never_overlaps_never_loses_a_crop(n, gap, align):
    rng = np.random.default_rng(n + gap)
    sizes = np.stack([rng.integers(1, 200, n), rng.integers(1, 150, n)], 1)
    sizes = -(-sizes // align) * align if align > 1 else sizes
    p = pack(sizes, (256, 640), gap=gap, align=align)
    check_packing(p, sizes, gap, align)
    if n:
        # Canvas pixels hold at least the crops.
        assert p.area >= int((sizes[:, 0] * sizes[:, 1]).sum())


def test_pack_tiny_and_canvas_sized_crops():
    sizes = np.array([[640, 256], [1, 1], [8, 8], [640, 1], [1, 256]])
    p = pack(sizes, (256, 640), gap=8, align=1)
    check_packing(p, sizes, 8, 1)
    assert p.n_canvases >= 3  # a canvas-sized crop leaves room for nothing else
    assert p.canvas_index[0] not in p.canvas_index[1:]


def test_pack_refuses_oversize_crops():
    with pytest.raises(PackingError, match="does not fit"):
        pack(np.array([[100, 300]]), (256, 640))
    with pytest.raises(ValueError, match="positive"):
        pack(np.array([[0, 10]]), (256, 640))
    with pytest.raises(ValueError, match="multiple of align"):
        pack(np.array([[8, 8]]), (250, 640), align=8)


def test_choose_picks_smallest_total_area_and_respects_budget():
    cands = candidate_canvases(640, 32)
    sizes = np.array([[200, 100], [120, 90], [64, 64]])
    p = choose_and_pack(sizes, cands, gap=8, align=8)
    check_packing(p, sizes, 8, 8)
    # Independent check: pack on every candidate and take the least area.
    areas = []
    for hw in cands:
        if hw[1] >= 200 and hw[0] >= 100:
            areas.append(pack(sizes, hw, 8, 8).area)
    assert p.area == min(areas)
    assert choose_and_pack(sizes, cands, gap=8, align=8, budget=p.area - 1) is None
    assert choose_and_pack(np.zeros((0, 2)), cands).n_canvases == 0


def test_choose_frame_sized_and_too_large_crops():
    cands = candidate_canvases(640, 32)
    p = choose_and_pack(np.array([[640, 480]]), cands, gap=8, align=8)
    assert p.canvas_hw[1] == 640 and p.canvas_hw[0] >= 480 and p.n_canvases == 1
    # Only small canvases allowed: a large crop fits none, so nothing is returned (not dropped).
    assert choose_and_pack(np.array([[300, 300], [10, 10]]), [(128, 640)], gap=8, align=8) is None


@pytest.mark.parametrize("seed", range(3))
def test_choose_with_many_random_regions_on_odd_sized_frames(seed):
    rng = np.random.default_rng(seed)
    h, w = [(333, 517), (481, 640), (640, 97)][seed]
    boxes = snap_boxes(random_boxes(rng, 300, h, w, max_side=60).astype(float), 8, (h, w))
    merged = merge_boxes(boxes, 8)
    sizes = merged[:, 2:] - merged[:, :2]
    p = choose_and_pack(sizes, candidate_canvases(640, 32), gap=8, align=8)
    assert p is not None
    check_packing(p, sizes, 8, 8)


def rectpack_reference(sizes, canvas_hw, gap, align):
    """(canvas index, positions) that rectpack gives with the settings packed_crops relies on."""
    rectpack = pytest.importorskip("rectpack")
    H, W = canvas_hw
    g = -(-gap // align)
    units = -(-np.asarray(sizes) // align) + g
    packer = rectpack.newPacker(
        mode=rectpack.PackingMode.Offline, bin_algo=rectpack.PackingBin.BNF,
        pack_algo=rectpack.GuillotineBafSas, sort_algo=rectpack.SORT_AREA, rotation=False,
    )  # fmt: skip
    for i, (w, h) in enumerate(units.tolist()):
        packer.add_rect(w, h, rid=i)
    packer.add_bin(W // align + g, H // align + g, count=float("inf"))
    packer.pack()
    index, positions = np.full(len(units), -1), np.zeros((len(units), 2), np.int64)
    for b, x, y, _, _, rid in packer.rect_list():
        index[rid], positions[rid] = b, (x * align, y * align)
    return index, positions


@pytest.mark.parametrize("seed", range(6))
def test_pack_places_every_crop_where_rectpack_does(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        n = int(rng.integers(1, 40))
        gap, align = [(0, 1), (8, 8), (5, 4), (32, 32)][int(rng.integers(0, 4))]
        H, W = [(256, 640), (640, 640), (96, 320)][int(rng.integers(0, 3))]
        if seed % 2:  # few distinct sizes: ties in area and in free-section fit
            sizes = rng.integers(1, 4, (n, 2)) * [W // 4, H // 4]
        else:
            sizes = np.stack([rng.integers(1, W + 1, n), rng.integers(1, H + 1, n)], 1)
        p = pack(sizes, (H, W), gap=gap, align=align)
        index, positions = rectpack_reference(sizes, (H, W), gap, align)
        np.testing.assert_array_equal(p.canvas_index, index)
        np.testing.assert_array_equal(p.positions, positions)
        assert p.n_canvases == index.max() + 1


@pytest.mark.parametrize("seed", range(4))
def test_choose_finds_the_least_area_of_all_candidates(seed):
    # choose_and_pack skips shapes by a lower bound and stops packings that can no longer win;
    # an exhaustive search over every shape must find no smaller area.
    rng = np.random.default_rng(seed)
    cands = candidate_canvases(640, 32, native=bool(seed % 2))
    for _ in range(10):
        boxes = random_boxes(rng, int(rng.integers(1, 60)), 480, 640, max_side=100)
        boxes = snap_boxes(boxes.astype(float), 32, (480, 640))
        merged = merge_boxes(boxes, 32)
        sizes = merged[:, 2:] - merged[:, :2]
        p = choose_and_pack(sizes, cands, gap=32, align=32)
        fits = [hw for hw in cands if hw[1] >= sizes[:, 0].max() and hw[0] >= sizes[:, 1].max()]
        areas = [pack(sizes, hw, 32, 32).area for hw in fits]
        assert p.area == min(areas)
        full = pack(sizes, p.canvas_hw, 32, 32)  # the chosen packing is that shape's own, not a cut one
        np.testing.assert_array_equal(p.positions, full.positions)
        np.testing.assert_array_equal(p.canvas_index, full.canvas_index)
        assert choose_and_pack(sizes, cands, gap=32, align=32, budget=p.area).area == p.area
        assert choose_and_pack(sizes, cands, gap=32, align=32, budget=p.area - 1) is None


def test_canvas_limit_allows_only_packings_that_can_still_win():
    best = Packing((100, 100), 3, np.zeros(1, np.int64), np.zeros((1, 2), np.int64))  # 30000 px
    assert _canvas_limit(10000, None, None) is None
    assert _canvas_limit(10000, best, None) == 2  # 3 canvases of this size tie in area but not in count
    assert _canvas_limit(7500, best, None) == 3  # 4 x 7500 ties in area, with more canvases
    assert _canvas_limit(15000, best, None) == 2  # 2 x 15000 ties in area with fewer canvases: it wins
    best2 = Packing((100, 150), 2, np.zeros(1, np.int64), np.zeros((1, 2), np.int64))  # 30000 px
    assert _canvas_limit(15000, best2, None) == 1  # the same tie in as many canvases does not
    assert _canvas_limit(10000, best, 25000.0) == 2 and _canvas_limit(10000, None, 25000.0) == 2
    assert _canvas_limit(10000, None, float("inf")) is None
