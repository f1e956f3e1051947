import numpy as np
import pytest
import torch

import argos
from argos.geometry import boxes_to_mask
from argos.tools.qunet.bench import ProposerBenchConfig, run_bench_proposer
from argos.proposers.qunet.checkpoint import save_checkpoint, shipped_weights
from argos.proposers.qunet.model import QUNet, QUNetConfig, flop_breakdown
from argos.proposers.qunet.proposer import QUNetProposer


def _constant_model(foreground: bool, preset="full_precision"):
    """A model whose logits say "object" (or "background") everywhere, whatever the image."""
    model = QUNet(QUNetConfig.from_preset(preset, width=4, depth=2, input_size=(32, 48)))
    with torch.no_grad():
        model.head.weight.zero_()
        model.head.bias.copy_(torch.tensor([0.0, 5.0] if foreground else [5.0, 0.0]))
    return model.eval()


def test_constant_models_give_full_and_empty_proposals():
    image = np.random.default_rng(0).integers(0, 255, (50, 70, 3), dtype=np.uint8)
    (full,) = QUNetProposer(model=_constant_model(True), dilation=0).propose([image])
    assert full.area_fraction == 1.0 and full.boxes.tolist() == [[0, 0, 70, 50]]
    (empty,) = QUNetProposer(model=_constant_model(False), dilation=0).propose([image])
    assert empty.area_fraction == 0.0 and len(empty.boxes) == 0


def test_threshold_upscale_and_dilation():
    p = QUNetProposer(model=_constant_model(True), threshold=0.5, dilation=2)
    prob = torch.tensor([[0.1, 0.9, 0.2], [0.1, 0.1, 0.1]])
    mask = p.mask_from_probability(prob, (40, 60))  # 20x20 pixels per cell
    assert torch.equal(mask, boxes_to_mask(torch.tensor([[20.0, 0.0, 40.0, 20.0]]), (40, 60)))
    props = p.finalize(mask)
    assert props.boxes.tolist() == [[18, 0, 42, 22]]
    assert torch.equal(p.mask_from_probability(prob, (40, 60)), mask)
    p.threshold = 0.95
    assert not p.mask_from_probability(prob, (40, 60)).any()


@pytest.mark.parametrize("dilation", [0, 3, "adaptive"])
@pytest.mark.parametrize("size", [(48, 64), (61, 97), (240, 320), (37, 200)])
def test_grid_components_equal_full_resolution_components(size, dilation):
    """The fast path (components on the logit grid) against the base class on the up-scaled mask."""
    rng = np.random.default_rng(sum(size))
    # min_area of 1.5 cells: drops lone cells, keeps larger blobs
    p = QUNetProposer(model=_constant_model(True), threshold=0.5, dilation=dilation,
                      min_area=int(1.5 * size[0] * size[1] / 48))
    dropped = 0
    for _ in range(5):
        prob = torch.from_numpy(rng.random((6, 8)) ** 3).float()  # a few separate blobs and specks
        fast = p.finalize_probability(prob, size)
        ref = p.finalize(p.mask_from_probability(prob, size))
        assert torch.equal(fast.mask, ref.mask)
        key = lambda b: sorted(map(tuple, b.tolist()))  # noqa: E731
        assert key(fast.boxes) == key(ref.boxes)
        dropped += len(p.finalize(p.mask_from_probability(prob, size)).boxes) < len(
            QUNetProposer(model=p.model, threshold=0.5, dilation=dilation).finalize(p.mask_from_probability(prob, size)).boxes)
    assert dropped > 0  # the speck filter was exercised


def test_dct_model_proposes_at_image_size():
    p = QUNetProposer(model=_constant_model(True, "all_quantized_dct"), dilation=0)
    (props,) = p.propose([np.zeros((45, 61, 3), np.uint8)])
    assert props.image_size == (45, 61) and props.area_fraction == 1.0
    assert set(p.last_timing) == {"preprocess_ms", "network_ms", "postprocess_ms"}


def test_gflops_use_the_low_bit_convention():
    p = argos.PROPOSERS.build("qunet", preset="all_quantized")
    assert p.gflops((480, 640)) == pytest.approx(flop_breakdown(p.model)["gflops_equiv"])
    assert p.gflops((480, 640)) < p.flops_detail["gflops_dense"]
    (props,) = p.propose([np.zeros((40, 50, 3), np.uint8)])
    assert props.gflops == pytest.approx(p.gflops((40, 50)))


def test_checkpoint_postprocess_is_the_default_and_arguments_win(tmp_path):
    path = save_checkpoint(_constant_model(True), tmp_path / "m.qunet",
                           meta={"postprocess": {"threshold": 0.3, "dilation": 5, "min_area": 7}})
    p = QUNetProposer(weights=str(path))
    assert (p.threshold, p.dilation, p.min_area) == (0.3, 5, 7)
    p = QUNetProposer(weights=str(path), threshold=0.6, dilation="adaptive", min_area=0)
    assert (p.threshold, p.dilation, p.min_area) == (0.6, "adaptive", 0)
    with pytest.raises(ValueError, match="not 'all_quantized'"):
        QUNetProposer(weights=str(path), preset="all_quantized")


def test_bad_arguments():
    with pytest.raises(ValueError, match="not both"):
        QUNetProposer(model=_constant_model(True), preset="all_quantized")
    with pytest.raises(TypeError):
        QUNetProposer(model="qunet")
    with pytest.raises(ValueError, match="threshold"):
        QUNetProposer(model=_constant_model(True), threshold=1.5)
    with pytest.raises(ValueError, match="valid presets"):
        QUNetProposer(preset="tiny")
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        QUNetProposer(model=_constant_model(True)).propose([np.zeros((10, 10, 3), np.float32)])
    with pytest.raises(FileNotFoundError):
        QUNetProposer(weights="no-such-weights")


@pytest.mark.skipif("qunet-coco" not in shipped_weights(), reason="qunet-coco not shipped")
def test_default_loads_the_shipped_coco_checkpoint():
    p = argos.PROPOSERS.build("qunet")
    assert p.info is not None and p.config.dct
    assert p.threshold == p.info.meta["postprocess"]["threshold"]


def test_bench_proposer_oracle_is_perfect_and_qunet_reports_cost(coco128):
    common = dict(images=str(coco128.images_dir), annotations=str(coco128.annotations_path), range="0:3", warmup=0)
    oracle = run_bench_proposer(ProposerBenchConfig(proposer="oracle", **common), progress=False)
    assert oracle["regions_detected"] == 1.0 and oracle["regions"] == sum(len(coco128.targets(i)["boxes"]) for i in range(3))
    q = run_bench_proposer(ProposerBenchConfig(proposer="qunet", preset="all_quantized_dct", **common), progress=False)
    assert q["params"] == sum(p.numel() for p in QUNet(QUNetConfig.from_preset("all_quantized_dct")).parameters())
    assert 0 < q["gflops"] < q["gflops_dense"] and q["latency_ms"]["median"] > 0 and "network" in q["latency_ms"]


def test_table41_rows_cost_only_without_weights(coco128):
    from argos.tools.qunet.bench import format_table41, run_table41
    from argos.proposers.qunet.model import PRESETS

    cfg = ProposerBenchConfig(images=str(coco128.images_dir), annotations=str(coco128.annotations_path),
                              range="0:1", warmup=0)
    rows = run_table41(cfg, progress=False)
    assert [r["preset"] for r in rows] == list(PRESETS) and not any(r["trained"] for r in rows)
    eq = {r["preset"]: r["gflops"] for r in rows}
    # more quantized blocks, fewer FLOP-equivalents; the dense count differs only by the tiny SE branches
    assert eq["full_precision"] > eq["middle_quantized"] > eq["middle_up_quantized"] > eq["all_quantized"]
    assert all(r["gflops_dense"] == pytest.approx(rows[0]["gflops_dense"], rel=1e-3) for r in rows[:4])
    assert "untrained" in format_table41(rows)


def test_backend_arguments():
    with pytest.raises(ValueError, match="backend must be one of"):
        QUNetProposer(weights="qunet-street", backend="tensorrt")
    with pytest.raises(ValueError, match="runs on the CPU"):
        QUNetProposer(weights="qunet-street", backend="onnxruntime", device="cuda")
    assert "backend='torch'" in repr(QUNetProposer(weights="qunet-street"))


def test_onnxruntime_backend_proposes_what_torch_does(coco128):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    ref = QUNetProposer(weights="qunet-coco")
    fast = QUNetProposer(weights="qunet-coco", backend="onnxruntime")
    grid_diff = grid_total = pix_diff = pix_total = 0
    for i in range(6):
        image = coco128[i].image
        x = ref.preprocess([image])
        with torch.inference_mode():
            want = ref.model(x)
        got = fast.logits(x)
        assert got.shape == want.shape and got.dtype == torch.float32
        # Close, not equal: activations on a rounding boundary of a low-bit quantizer flip when
        # the runtimes sum in another order, and the flip spreads through later layers.
        assert float((got - want).abs().median()) < 1e-2
        p_ref = 1 - torch.softmax(want, 1)[0, 0]
        p_got = 1 - torch.softmax(got, 1)[0, 0]
        grid_diff += int(((p_ref > ref.threshold) != (p_got > ref.threshold)).sum())
        grid_total += p_ref.numel()
        (a,), (b,) = ref.propose([image]), fast.propose([image])
        pix_diff += int((a.mask != b.mask).sum())
        pix_total += a.mask.numel()
    assert grid_diff / grid_total < 0.005 and pix_diff / pix_total < 0.01
