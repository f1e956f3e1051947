"""ONNX export of QU-Net: onnxruntime against the torch model.

Tolerances: float graphs (no quantizer) must match to float32 rounding (1e-4). With DoReFa
activations the two runtimes sum convolutions in different orders, so an activation that sits on
a rounding boundary can land on either side; at 1 bit on a 2x3 grid (the deepest block at 240x320
with DCT input) one flip moves many logits downstream. Measured on 128 coco128 images with
``qunet-coco``: median |diff| ~1e-5, max 0.26, 0.06% of thresholded logit-grid pixels differ and
125/128 final proposal masks are identical (0.056% of image pixels differ; ``qunet-street`` on
100 PETS frames: 0.022% of grid pixels, 95/100 identical). The tests require < 0.1% differing
logit-grid mask pixels, and < 1% differing proposal pixels with at least half identical.
"""
import numpy as np
import pytest
import torch

pytest.importorskip("onnx", reason="onnx is not installed (needed to export QU-Net)")
ort = pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (needed to run the exported QU-Net)")

import onnx  # noqa: E402

from argos.proposers.qunet.checkpoint import load_checkpoint, shipped_weights  # noqa: E402
from argos.proposers.qunet.onnx_graph import ExportableQUNet, export_onnx  # noqa: E402
from argos.tools.qunet.export import compare_onnx, main  # noqa: E402
from argos.proposers.qunet.model import QUNet, QUNetConfig  # noqa: E402
from argos.proposers.qunet.proposer import QUNetProposer  # noqa: E402


SHIPPED = ["qunet-coco", "qunet-street"]


def _run(path, x: torch.Tensor) -> torch.Tensor:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return torch.from_numpy(sess.run(["logits"], {"image": x.numpy()})[0])


def _trained(model: QUNet) -> QUNet:
    """Random but non-trivial BN statistics and gates, so every op of the graph matters."""
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.uniform_(0.5, 1.5, generator=g)
                m.bias.uniform_(-0.2, 0.2, generator=g)
    return model.eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    available = shipped_weights()
    missing = [n for n in SHIPPED if n not in available]
    if missing:
        pytest.skip(f"shipped QU-Net checkpoints missing: {missing}")
    out = tmp_path_factory.mktemp("onnx")
    return {name: export_onnx(name, out / f"{name}.onnx") for name in SHIPPED}


@pytest.mark.parametrize("dct", [False, True])
def test_float_graph_matches_torch_exactly(tmp_path, dct):
    """Without quantizers nothing can flip: the graph (incl. the block DCT) must equal torch."""
    cfg = QUNetConfig.from_preset("full_precision", width=4, depth=2, input_size=(64, 96), dct=dct)
    model = _trained(QUNet(cfg))
    path = export_onnx(model, tmp_path / "fp.onnx")
    x = torch.rand(3, 3, 64, 96, generator=torch.Generator().manual_seed(1))  # batch 3: dynamic batch axis
    with torch.inference_mode():
        ref = model(x)
    got = _run(path, x)
    assert got.shape == ref.shape == (3, 2, 64 // (8 if dct else 1), 96 // (8 if dct else 1))
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


def test_export_form_is_bit_exact_and_leaves_model_alone():
    model, _ = load_checkpoint("qunet-coco") if "qunet-coco" in shipped_weights() else (
        _trained(QUNet(QUNetConfig.from_preset("all_quantized_dct", input_size=(128, 128)))), None)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    ex = ExportableQUNet(model)
    x = torch.rand(2, 3, *model.config.input_size, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        assert torch.equal(ex(x), model(x))
    # binary weights became plain float constants with exactly two values per layer
    conv = ex.net.stem[0].conv
    assert not conv.binary and conv.weight.unique().numel() == 2
    assert model.stem[0].conv.binary
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_graph_has_plain_quantizer_ops(exported):
    graph = onnx.load(str(exported["qunet-coco"])).graph
    ops = {n.op_type for n in graph.node}
    assert {"Clip", "Round", "Conv"} <= ops
    assert not any(op.startswith("ATen") or n.domain not in ("", "ai.onnx") for n in graph.node for op in [n.op_type])
    meta = {p.key: p.value for p in onnx.load(str(exported["qunet-coco"])).metadata_props}
    assert meta["argos.input_size"] == "[240, 320]" and meta["argos.output_stride"] == "8"
    assert '"threshold": 0.1' in meta["argos.postprocess"]


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoints_on_random_input(exported, name):
    proposer = QUNetProposer(weights=name)
    x = torch.rand(4, 3, 240, 320, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        ref = proposer.model(x)
    got = _run(exported[name], x)
    diff = (got - ref).abs()
    assert diff.median() < 1e-4  # most logits agree to float rounding; the rest come from boundary flips
    on = lambda t: (1 - torch.softmax(t, dim=1)[:, 0]) > proposer.threshold  # noqa: E731
    assert (on(got) != on(ref)).float().mean() < 1e-3


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_checkpoints_on_coco_images(exported, coco128, name):
    proposer = QUNetProposer(weights=name)
    images = [coco128[i].image for i in range(12)]
    r = compare_onnx(proposer, exported[name], images)
    print(name, r)
    assert r["images"] == 12
    assert r["grid_mask_disagreement"] < 1e-3
    # One flipped cell can add or split a component, which moves a whole box edge by one cell
    # (8 image-pixels per logit pixel at 240x320): allow 1% of the pixels, most images identical.
    assert r["proposal_mask_disagreement"] < 1e-2
    assert r["images_with_equal_proposals"] >= 6  # measured 11/12 (coco), 7/12 (street: off-domain images)


def test_cli_exports_and_checks(tmp_path, coco128, assets, capsys):
    if "qunet-coco" not in shipped_weights():
        pytest.skip("qunet-coco checkpoint missing")
    out = tmp_path / "sub" / "q.onnx"
    images = assets / "data/coco128/images/train2017"
    assert main(["--weights", "qunet-coco", "--onnx", str(out), "--check", str(images), "--limit", "3"]) == 0
    text = capsys.readouterr().out
    assert out.is_file() and "check on 3 image(s)" in text and "max |logit diff|" in text


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="opset"):
        export_onnx(QUNet(QUNetConfig.from_preset("full_precision", width=4, depth=2, input_size=(32, 32))),
                    tmp_path / "x.onnx", opset=9)
    with pytest.raises(TypeError):
        export_onnx(3, tmp_path / "x.onnx")
    with pytest.raises(FileNotFoundError):
        export_onnx(tmp_path / "missing.qunet", tmp_path / "x.onnx")
