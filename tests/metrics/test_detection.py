"""precision_recall and recall_vs_reference against hand-made cases and a brute-force reference."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from argos.metrics import box_iou, precision_recall, recall_vs_reference
from argos.structures import Detections

SIZE = (100, 100)


def dets(boxes, scores, labels) -> Detections:
    return Detections(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), scores, labels, SIZE)


def gt(boxes, labels, iscrowd=None) -> dict:
    out = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels)}
    if iscrowd is not None:
        out["iscrowd"] = torch.tensor(iscrowd, dtype=torch.bool)
    return out


# --- an independent reference: plain loops, re-matching at every threshold -------------------


def _iou(a, b, crowd=False):
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    area_a = (a[2] - a[0]) * (a[3] - a[1])
    union = area_a if crowd else area_a + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _brute_counts(preds, gts, t, gt_classes, thr):
    """Per class: (tp, predictions, ground truth, has any prediction) at threshold t, and kept scores."""
    tp = {c: 0 for c in gt_classes}
    npred = {c: 0 for c in gt_classes}
    ngt = {c: 0 for c in gt_classes}
    any_pred = {c: False for c in gt_classes}
    kept = []
    for d, g in zip(preds, gts):
        crowd = g.get("iscrowd", torch.zeros(len(g["labels"]), dtype=torch.bool)).tolist()
        gb, gl = g["boxes"].tolist(), g["labels"].tolist()
        for l, c in zip(gl, crowd):
            if not c:
                ngt[l] += 1
        order = sorted(range(len(d)), key=lambda i: -float(d.scores[i]))
        used = set()
        for i in order:
            s, l, b = float(d.scores[i]), int(d.labels[i]), d.boxes[i].tolist()
            best_j, best_iou = None, thr
            for j in range(len(gb)):
                if crowd[j] or j in used or gl[j] != l:
                    continue
                v = _iou(b, gb[j])
                if v >= best_iou and (best_j is None or v > best_iou):
                    best_j, best_iou = j, v
            is_tp = best_j is not None
            if is_tp:
                used.add(best_j)
            elif any(crowd[j] and gl[j] == l and _iou(b, gb[j], crowd=True) >= thr for j in range(len(gb))):
                continue  # ignored: matched a crowd region
            if l in tp:
                kept.append(s)
                any_pred[l] = True
                if s >= t:
                    npred[l] += 1
                    tp[l] += is_tp
    return tp, npred, ngt, any_pred, kept


def _brute_pr(preds, gts, thr=0.5):
    gt_classes = sorted(
        {int(l) for g in gts for l, c in zip(g["labels"], g.get("iscrowd", [0] * len(g["labels"]))) if not c}
    )
    *_, kept = _brute_counts(preds, gts, -1.0, gt_classes, thr)
    best = None
    for t in sorted(set(kept)):  # ascending; keep strictly better so ties go to the lowest threshold
        tp, npred, ngt, any_pred, _ = _brute_counts(preds, gts, t, gt_classes, thr)
        p, r, f = [], [], []
        for c in gt_classes:
            if not any_pred[c]:
                pc = rc = 0.0
            else:
                pc = tp[c] / npred[c] if npred[c] else 1.0
                rc = tp[c] / ngt[c]
            p.append(pc)
            r.append(rc)
            f.append(2 * pc * rc / (pc + rc) if pc + rc else 0.0)
        if best is None or np.mean(f) > best[2]:
            best = (np.mean(p), np.mean(r), np.mean(f), t)
    return best


def test_hand_made_single_class():
    g = [gt([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 1])]
    p = [dets([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 31]], [0.9, 0.8, 0.7], [1, 1, 1])]
    # t=0.9: P 1, R 1/2 (F1 .67); t=0.8: P 1/2, R 1/2; t=0.7: P 2/3, R 1 (F1 .8) <- best
    out = precision_recall(p, g)
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["recall"] == pytest.approx(1.0)
    assert out["f1"] == pytest.approx(0.8)
    assert out["conf"] == pytest.approx(0.7)


def test_duplicates_wrong_class_and_crowd():
    g = [gt([[0, 0, 10, 10], [40, 40, 90, 90]], [1, 1], [False, True])]
    p = [
        dets(
            [[0, 0, 10, 10], [0, 0, 10, 10], [1, 1, 10, 10], [45, 45, 60, 60], [50, 50, 70, 70], [70, 70, 80, 80]],
            [0.9, 0.8, 0.3, 0.95, 0.6, 0.5],
            [1, 1, 2, 1, 1, 1],
        )
    ]
    # the three detections inside the crowd region are ignored; the duplicate at 0.8 is a false
    # positive; class 2 has no ground truth so its detection does not count.
    out = precision_recall(p, g)
    assert out["precision"] == 1.0 and out["recall"] == 1.0 and out["conf"] == pytest.approx(0.9)


def test_class_mean_and_missing_class():
    g = [gt([[0, 0, 10, 10], [20, 20, 30, 30]], [1, 2]), gt([[0, 0, 50, 50]], [3])]
    p = [dets([[0, 0, 10, 10]], [0.6], [1]), dets([[0, 0, 50, 50]], [0.4], [3])]
    # classes 1 and 3 are found, class 2 has no prediction at all (P = R = 0)
    out = precision_recall(p, g)
    assert out["precision"] == pytest.approx(2 / 3)
    assert out["recall"] == pytest.approx(2 / 3)
    assert out["conf"] == pytest.approx(0.4)


def test_empty_cases():
    empty = Detections.empty(SIZE)
    zeros = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "conf": 0.0}
    assert precision_recall([], []) == zeros
    assert precision_recall([empty], [gt([[0, 0, 5, 5]], [1])]) == zeros
    assert precision_recall([dets([[0, 0, 5, 5]], [0.9], [1])], [gt([], [])]) == zeros
    with pytest.raises(ValueError, match="1 prediction lists but 2"):
        precision_recall([empty], [gt([], []), gt([], [])])


def test_against_brute_force():
    rng = np.random.default_rng(1)
    for _ in range(40):
        preds, gts = [], []
        for _ in range(rng.integers(1, 4)):
            m = int(rng.integers(0, 6))
            gxy = rng.uniform(0, 80, size=(m, 2))
            gboxes = np.concatenate([gxy, gxy + rng.uniform(5, 20, size=(m, 2))], 1)
            glabels = rng.integers(1, 4, size=m)
            crowd = rng.random(m) < 0.15
            n = int(rng.integers(0, 10))
            # detections: jittered copies of ground truth plus random boxes
            src = gboxes[rng.integers(0, m, size=n)] if m else rng.uniform(0, 80, size=(n, 4))
            jitter = rng.normal(0, 2.5, size=(n, 4))
            pboxes = np.sort((src + jitter).reshape(n, 2, 2), axis=1).reshape(n, 4)
            plabels = glabels[rng.integers(0, m, size=n)] if m else rng.integers(1, 4, size=n)
            plabels = np.where(rng.random(n) < 0.15, rng.integers(1, 5, size=n), plabels)
            scores = np.round(rng.random(n), 2)  # rounding makes score ties
            preds.append(dets(pboxes.tolist(), scores, plabels))
            gts.append(gt(gboxes.tolist(), glabels.tolist(), crowd.tolist()))
        out = precision_recall(preds, gts)
        ref = _brute_pr(preds, gts)
        if ref is None:
            assert out["f1"] == 0.0
            continue
        assert out["f1"] == pytest.approx(ref[2])
        assert out["precision"] == pytest.approx(ref[0])
        assert out["recall"] == pytest.approx(ref[1])
        assert out["conf"] == pytest.approx(ref[3])


def test_box_iou():
    a = np.array([[0, 0, 10, 10], [5, 5, 15, 15]])
    b = np.array([[0, 0, 10, 10], [0, 0, 20, 20], [30, 30, 30, 30]])
    np.testing.assert_allclose(box_iou(a, b), [[1, 0.25, 0], [25 / 175, 0.25, 0]])
    np.testing.assert_allclose(box_iou(a, b, crowd=True), [[1, 1, 0], [0.25, 1, 0]])


# --- recall_vs_reference ----------------------------------------------------------------------


def test_recall_vs_reference():
    ref = dets([[0, 0, 10, 10], [20, 20, 30, 30], [50, 50, 60, 60], [0, 0, 5, 5]], [0.9, 0.8, 0.3, 0.1], [1, 1, 2, 1])
    assert recall_vs_reference([ref], [ref]) == 1.0
    # the 0.1 reference is below min_score; the moved box no longer overlaps enough
    cand = dets([[0, 0, 10, 10], [25, 25, 35, 35], [50, 50, 60, 60]], [0.5, 0.9, 0.3], [1, 1, 2])
    assert recall_vs_reference([cand], [ref]) == pytest.approx(2 / 3)
    # label must agree
    assert recall_vs_reference([dets([[0, 0, 10, 10]], [0.9], [2])], [ref[:1]]) == 0.0
    # candidates below min_score do not count
    assert recall_vs_reference([dets([[0, 0, 10, 10]], [0.2], [1])], [ref[:1]]) == 0.0
    assert recall_vs_reference([dets([[0, 0, 10, 10]], [0.2], [1])], [ref[:1]], min_score=0.2) == 1.0
    # one-to-one: two references cannot share one candidate
    two = dets([[0, 0, 10, 10], [0, 0, 10, 11]], [0.9, 0.8], [1, 1])
    assert recall_vs_reference([dets([[0, 0, 10, 10]], [0.9], [1])], [two]) == 0.5
    # nothing to reproduce
    assert recall_vs_reference([cand], [Detections.empty(SIZE)]) == 1.0
    assert recall_vs_reference([], []) == 1.0
    with pytest.raises(ValueError, match="1 candidate lists but 2"):
        recall_vs_reference([cand], [ref, ref])


def test_recall_vs_reference_pools_images():
    a = dets([[0, 0, 10, 10]], [0.9], [1])
    b = dets([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50]], [0.9, 0.9, 0.9], [1, 1, 1])
    assert recall_vs_reference([a, a], [a, b]) == pytest.approx(2 / 4)


# --- real data --------------------------------------------------------------------------------


def test_coco128_perfect_predictions(coco128):
    preds, gts = [], []
    for i in range(len(coco128)):
        t = coco128.targets(i)
        keep = ~t["iscrowd"]
        preds.append(Detections(t["boxes"][keep], torch.ones(int(keep.sum())), t["labels"][keep], coco128.image_size(i)))
        gts.append(t)
    out = precision_recall(preds, gts)
    assert out["precision"] == 1.0 and out["recall"] == 1.0 and out["f1"] == pytest.approx(1.0)
    assert recall_vs_reference(preds, preds) == 1.0
    # without every other image's predictions, classes left with no prediction score P = R = 0
    half = [p if k % 2 == 0 else Detections.empty(p.image_size) for k, p in enumerate(preds)]
    out = precision_recall(half, gts)
    gt_classes = {int(l) for g in gts for l in g["labels"][~g["iscrowd"]]}
    predicted = {int(l) for p in half for l in p.labels}
    assert out["precision"] == pytest.approx(len(predicted) / len(gt_classes))
    assert 0.2 < out["recall"] < out["precision"]


def test_held_ceiling_counts_what_key_frames_can_reach():
    """Key frames 0 and 2: frame 1 keeps person A (moved but overlapping), loses person B (moved
    off its old box: only the count ceiling reaches it) and the car (below 0.25 on the key frame);
    frame 3 reaches two of its three persons. Counted by hand."""
    from argos.metrics import held_ceiling

    def d(boxes, scores, labels):
        return Detections(torch.tensor(boxes, dtype=torch.float32), torch.tensor(scores), torch.tensor(labels),
                          (100, 100))

    refs = [
        d([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], [0.9, 0.3, 0.2], [0, 0, 2]),
        d([[5, 0, 15, 10], [80, 80, 90, 90], [20, 20, 30, 30]], [0.8, 0.6, 0.5], [0, 0, 2]),
        d([[0, 40, 10, 50], [40, 0, 50, 10]], [0.9, 0.9], [0, 0]),
        d([[2, 42, 12, 52], [44, 2, 54, 12], [70, 70, 80, 80]], [0.9, 0.9, 0.9], [0, 0, 0]),
    ]
    c = held_ceiling(refs, 2)
    assert c["references"] == 10
    assert c["overlap"] == pytest.approx(7 / 10)  # 2 + 1 + 2 + 2
    assert c["count"] == pytest.approx(8 / 10)  # 2 + 2 + 2 + 2
    assert held_ceiling(refs, 1) == {"overlap": 1.0, "count": 1.0, "references": 10}
    with pytest.raises(ValueError, match="interval"):
        held_ceiling(refs, 0)


def test_max_matching_against_brute_force():
    import itertools

    from argos.metrics.detection import _max_matching

    rng = np.random.default_rng(0)
    for _ in range(40):
        allowed = rng.random((rng.integers(0, 5), rng.integers(0, 5))) < 0.4
        best = 0
        rows, cols = allowed.shape
        for perm in itertools.permutations(range(max(rows, cols)), rows) if rows <= cols else []:
            best = max(best, sum(bool(allowed[r, c]) for r, c in enumerate(perm) if c < cols))
        if rows > cols:  # match the other way round
            for perm in itertools.permutations(range(rows), cols):
                best = max(best, sum(bool(allowed[r, c]) for c, r in enumerate(perm)))
        assert _max_matching(allowed) == best
