import json
import struct

import pytest
import torch

from argos.proposers.qunet.checkpoint import (
    CheckpointError, load_checkpoint, load_weights, read_header, resolve_weights, save_checkpoint, shipped_weights,
)
from argos.proposers.qunet.model import QUNet, QUNetConfig
from argos.proposers.qunet.quant import BinaryConv2d
from argos.tools.qunet.train import qunet_loss


def _trained(preset="all_quantized", **kw):
    torch.manual_seed(0)
    model = QUNet(QUNetConfig.from_preset(preset, width=4, depth=2, input_size=(32, 32), **kw))
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-2)
    x = torch.rand(2, 3, 32, 32)
    out = model(x)
    target = (torch.rand(2, *out.shape[2:]) > 0.7).long()
    for _ in range(2):  # move weights and BN statistics away from their initial values
        opt.zero_grad()
        qunet_loss(model(x), target).backward()
        opt.step()
    return model.eval()


@pytest.mark.parametrize("preset", ["all_quantized", "all_quantized_dct", "middle_quantized", "full_precision"])
def test_round_trip_gives_equal_outputs(tmp_path, preset):
    model = _trained(preset)
    path = save_checkpoint(model, tmp_path / "m.qunet", metrics={"regions_detected": 0.97}, meta={"note": "test"})
    loaded, info = load_checkpoint(path)
    assert info.config == model.config
    assert info.metrics == {"regions_detected": 0.97} and info.meta == {"note": "test"}
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    assert read_header(path).metrics["regions_detected"] == 0.97


def test_binary_weights_are_packed_one_bit_each(tmp_path):
    model = _trained("all_quantized")
    path = save_checkpoint(model, tmp_path / "m.qunet")
    layers = {f"{n}.weight": m.weight.numel() for n, m in model.named_modules() if isinstance(m, BinaryConv2d)}
    raw = path.read_bytes()
    (head_len,) = struct.unpack("<I", raw[10:14])
    header = json.loads(raw[14:14 + head_len])
    stored = {t["name"]: t for t in header["tensors"]}
    assert {k for k, t in stored.items() if t["kind"] == "binary"} == set(layers)
    for name, n in layers.items():
        assert stored[name]["nbytes"] == (n + 7) // 8  # one bit per weight
        w = model.state_dict()[name]
        assert stored[name]["scale"] == pytest.approx(float(w.abs().mean()), rel=1e-6)
    others = sum(t["nbytes"] for t in stored.values() if t["kind"] != "binary")
    assert len(raw) == 14 + head_len + others + sum((n + 7) // 8 for n in layers.values())
    fp = save_checkpoint(_trained("full_precision"), tmp_path / "fp.qunet")
    assert fp.stat().st_size > path.stat().st_size


def test_corrupt_and_foreign_files(tmp_path):
    path = save_checkpoint(_trained(), tmp_path / "m.qunet")
    raw = path.read_bytes()
    bad = tmp_path / "bad.qunet"

    bad.write_bytes(raw[:-1] + bytes([raw[-1] ^ 0xFF]))
    with pytest.raises(CheckpointError, match="checksum"):
        load_checkpoint(bad)
    bad.write_bytes(raw[: len(raw) - 50])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(bad)
    bad.write_bytes(raw[:20])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(bad)
    bad.write_bytes(b"PK\x03\x04 a zip, not ours" * 4)
    with pytest.raises(CheckpointError, match="not a QU-Net checkpoint"):
        load_checkpoint(bad)
    bad.write_bytes(raw[:8] + struct.pack("<H", 99) + raw[10:])
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint(bad)
    bad.write_bytes(raw[:14] + b"#" + raw[15:])
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.qunet")
    assert issubclass(CheckpointError, ValueError)


def test_mismatched_config(tmp_path):
    path = save_checkpoint(_trained(), tmp_path / "m.qunet")
    other = QUNet(QUNetConfig.from_preset("all_quantized", width=8, depth=2, input_size=(32, 32)))
    with pytest.raises(CheckpointError, match="width: checkpoint 4 vs model 8"):
        load_weights(other, path)
    same = QUNet(QUNetConfig.from_preset("all_quantized", width=4, depth=2, input_size=(32, 32)))
    assert load_weights(same, path).config.width == 4

    # a header whose config does not fit its tensors (hand-edited file)
    raw = path.read_bytes()
    (head_len,) = struct.unpack("<I", raw[10:14])
    header = json.loads(raw[14:14 + head_len])
    header["config"]["width"] = 6
    head = json.dumps(header).encode()
    edited = tmp_path / "edited.qunet"
    edited.write_bytes(raw[:10] + struct.pack("<I", len(head)) + head + raw[14 + head_len:])
    with pytest.raises(CheckpointError, match="does not match the model"):
        load_checkpoint(edited)


def test_shipped_names_resolve():
    for name, path in shipped_weights().items():
        assert resolve_weights(name) == path
        assert path.stat().st_size <= 2 * 1024 * 1024
        info = read_header(path)
        assert "postprocess" in info.meta and "val" in info.metrics
    with pytest.raises(FileNotFoundError, match="shipped checkpoints"):
        resolve_weights("qunet-nowhere")


def test_meta_paths_are_stored_portably(tmp_path, monkeypatch):
    assets = tmp_path / "assets"
    (assets / "data").mkdir(parents=True)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("ARGOS_ASSETS", str(assets))
    monkeypatch.chdir(work)
    meta = {
        "command": f"argos train qunet --video {assets}/data/v.avi --out /elsewhere/runs/a.qunet --log {work}/logs/x",
        "data": {"images": f"{assets}/data/imgs", "video": None, "ranges": ["0:10", "/abs/other/file.json"]},
        "url": "https://example.com/a/b",
    }
    path = save_checkpoint(_trained(), tmp_path / "m.qunet", meta=meta)
    header = read_header(path).meta
    assert header["command"] == "argos train qunet --video $ARGOS_ASSETS/data/v.avi --out a.qunet --log logs/x"
    assert header["data"] == {"images": "$ARGOS_ASSETS/data/imgs", "video": None, "ranges": ["0:10", "file.json"]}
    assert header["url"] == "https://example.com/a/b"


def test_shipped_checkpoints_hold_no_machine_paths():
    for name in ("qunet-coco", "qunet-street"):
        text = json.dumps(read_header(resolve_weights(name)).meta)
        assert "/work/" not in text and "/tmp/" not in text and "/home/" not in text, name
        assert "$ARGOS_ASSETS/data/" in text
