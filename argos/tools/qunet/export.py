"""``argos export qunet``: write the QU-Net proposer network to ONNX and check it against torch.

Example::

    argos export qunet --weights qunet-coco --onnx qunet-coco.onnx \\
        --check ../shared/data/coco128/images/train2017 --limit 16

The graph itself (inputs, outputs, what is inside it) is described in
:mod:`argos.proposers.qunet.onnx_graph`.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, Iterable, List, Optional

import numpy as np
import torch

from argos.proposers.qunet.onnx_graph import INPUT_NAME, OUTPUT_NAME, PathLike, export_onnx, ort_session

__all__ = ["compare_onnx", "export_onnx", "main"]


def compare_onnx(proposer, onnx_path: PathLike, images: Iterable[np.ndarray]) -> Dict[str, Any]:
    """Run ``proposer`` (torch) and onnxruntime on the same preprocessed images and compare.

    Args:
        proposer: a :class:`~argos.proposers.qunet.proposer.QUNetProposer` (its model, threshold
            and post-processing are the reference).
        onnx_path: the exported model.
        images: HxWx3 uint8 RGB images.

    Returns:
        ``{"images", "max_abs_logit_diff", "grid_pixels", "grid_pixels_differing",
        "grid_mask_disagreement" (fraction of logit-grid pixels whose thresholded foreground
        differs), "proposal_pixels_differing" (over all images, at image resolution),
        "proposal_mask_disagreement", "images_with_equal_proposals"}``.
    """
    sess = ort_session(onnx_path)
    n = 0
    max_diff = 0.0
    grid_total = grid_diff = 0
    prop_total = prop_diff = 0
    equal = 0
    for image in images:
        x = proposer.preprocess([image])
        with torch.inference_mode():
            ref = proposer.model(x).float().cpu()
        got = torch.from_numpy(sess.run([OUTPUT_NAME], {INPUT_NAME: x.cpu().numpy()})[0])
        if got.shape != ref.shape:
            raise ValueError(f"onnx logits have shape {tuple(got.shape)}, torch {tuple(ref.shape)}")
        max_diff = max(max_diff, float((got - ref).abs().max()))
        p_ref = 1.0 - torch.softmax(ref, dim=1)[0, 0]
        p_got = 1.0 - torch.softmax(got, dim=1)[0, 0]
        m_ref, m_got = p_ref > proposer.threshold, p_got > proposer.threshold
        grid_total += m_ref.numel()
        grid_diff += int((m_ref != m_got).sum())
        a = proposer.finalize_probability(p_ref, image.shape[:2]).mask
        b = proposer.finalize_probability(p_got, image.shape[:2]).mask
        prop_total += a.numel()
        d = int((a != b).sum())
        prop_diff += d
        equal += d == 0
        n += 1
    if n == 0:
        raise ValueError("compare_onnx got no images")
    return {
        "images": n,
        "max_abs_logit_diff": max_diff,
        "grid_pixels": grid_total,
        "grid_pixels_differing": grid_diff,
        "grid_mask_disagreement": grid_diff / grid_total,
        "proposal_pixels_differing": prop_diff,
        "proposal_mask_disagreement": prop_diff / prop_total,
        "images_with_equal_proposals": equal,
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="argos export qunet", description="Export a QU-Net proposer network to ONNX.")
    p.add_argument("--weights", default="qunet-coco", help="shipped checkpoint name (qunet-coco, qunet-street) or path")
    p.add_argument("--onnx", required=True, help="output .onnx file")
    p.add_argument("--opset", type=int, default=17)
    p.add_argument("--static-batch", action="store_true", help="fix the batch dimension to 1")
    p.add_argument("--check", default=None, help="image folder or video: compare onnxruntime with torch on it")
    p.add_argument("--limit", type=int, default=16, help="images/frames used by --check")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    """``argos export qunet`` entry point."""
    a = build_parser().parse_args(argv)
    if a.limit < 1:
        print("argos export qunet: error: --limit must be >= 1", file=sys.stderr)
        return 2
    try:
        from argos.proposers.qunet.proposer import QUNetProposer

        path = export_onnx(a.weights, a.onnx, opset=a.opset, dynamic_batch=not a.static_batch)
        proposer = QUNetProposer(weights=a.weights)  # the torch reference, with the checkpoint's post-processing
    except (ValueError, TypeError, FileNotFoundError) as err:
        print(f"argos export qunet: error: {err}", file=sys.stderr)
        return 2
    c = proposer.config
    h, w = c.input_size
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KiB, opset {a.opset}): image[B,3,{h},{w}] in [0,1] -> "
          f"logits[B,{c.num_classes},{h // proposer.model.output_stride},{w // proposer.model.output_stride}]"
          f"{' (block DCT in the graph)' if c.dct else ''}; threshold {proposer.threshold}")
    if a.check:
        from argos.data.video import VideoReader

        try:
            frames = (frame for _, frame in VideoReader(a.check, limit=a.limit))
            r = compare_onnx(proposer, path, frames)
        except (ValueError, FileNotFoundError) as err:
            print(f"argos export qunet: error: {err}", file=sys.stderr)
            return 2
        print(f"check on {r['images']} image(s): max |logit diff| {r['max_abs_logit_diff']:.3g}; "
              f"logit-grid mask differs at {r['grid_pixels_differing']}/{r['grid_pixels']} pixels "
              f"({100 * r['grid_mask_disagreement']:.4f}%); proposal masks equal on "
              f"{r['images_with_equal_proposals']}/{r['images']} images "
              f"({100 * r['proposal_mask_disagreement']:.4f}% of pixels differ)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
