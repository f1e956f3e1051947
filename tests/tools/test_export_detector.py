"""``argos export detector`` and the exported file through ``argos run`` / ``argos bench`` / ``argos pareto``."""
from __future__ import annotations

import json

import pytest

pytest.importorskip("onnxruntime")

from argos.cli import main  # noqa: E402

PETS = "data/video/pets2009_s2l1_480x360.avi"


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory, yolov5n_weights):
    out = tmp_path_factory.mktemp("export") / "y5n.onnx"
    assert main(["export", "detector", "--weights", str(yolov5n_weights), "--img-size", "256",
                 "--dynamic-batch", "--out", str(out)]) == 0
    return out


def test_export_writes_metadata_and_checks_itself(onnx_file, capsys):
    import onnx

    meta = {p.key: p.value for p in onnx.load(str(onnx_file)).metadata_props}
    assert meta["stride"] == "32" and meta["imgsz"] == "[256, 256]" and meta["layout"] == "yolov5"
    assert eval(meta["names"])[0] == "person"  # noqa: S307 - our own repr of a dict of str


def test_export_refuses_bad_arguments(tmp_path, yolov5n_weights, capsys):
    assert main(["export", "detector", "--weights", str(yolov5n_weights), "--img-size", "250",
                 "--out", str(tmp_path / "m.onnx")]) == 2
    assert "multiple of 32" in capsys.readouterr().err
    assert main(["export", "detector", "--weights", str(tmp_path / "none.pt"), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "none.pt" in capsys.readouterr().err
    assert not (tmp_path / "m.onnx").exists()


def test_run_on_the_export_compares_with_the_unwrapped_export(onnx_file, assets, tmp_path, capsys):
    summary = tmp_path / "s.json"
    assert main(["run", str(assets / PETS), "--weights", str(onnx_file), "--img-size", "256", "--compare",
                 "--limit", "12", "--threads", "2", "--json", str(summary), "--no-progress"]) == 0
    s = json.loads(summary.read_text())
    assert s["frames"] == 12 and 0.0 < s["agreement"] <= 1.0 and s["speedup"] > 0
    rows = [json.loads(line) for line in summary.with_suffix(".jsonl").read_text().splitlines()]
    assert len(rows) == 12 and any(r["boxes"] for r in rows)


def test_run_full_proposer_equals_unwrapped_export(onnx_file, assets, tmp_path):
    summary = tmp_path / "s.json"
    assert main(["run", str(assets / PETS), "--weights", str(onnx_file), "--img-size", "256", "--compare",
                 "--proposer", "full", "--executor", "masked", "--limit", "5", "--json", str(summary),
                 "--no-progress"]) == 0
    assert json.loads(summary.read_text())["agreement"] == 1.0


def test_openvino_backend_from_the_command_line(onnx_file, assets, tmp_path):
    pytest.importorskip("openvino")
    summary = tmp_path / "s.json"
    assert main(["run", str(assets / PETS), "--weights", str(onnx_file), "--img-size", "256", "--detector-opt",
                 "backend=openvino", "--compare", "--limit", "5", "--json", str(summary), "--no-progress"]) == 0
    assert json.loads(summary.read_text())["frames"] == 5


def test_pareto_on_the_export(onnx_file, assets, tmp_path):
    out = tmp_path / "p.json"
    assert main(["pareto", str(assets / PETS), "--weights", str(onnx_file), "--img-size", "256", "--limit", "6",
                 "--warmup", "0", "--skips", "2", "--sizes", "192", "--argos", "temporal+packed_crops",
                 "--json", str(out), "--no-progress"]) == 0
    result = json.loads(out.read_text())
    assert result["backend"] == "onnxruntime"
    assert {p["method"] for p in result["points"]} >= {"baseline", "argos", "skip", "resolution"}
