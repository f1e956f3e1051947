"""argos run stopped by a signal, in a real subprocess: nothing processed is lost."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

ASSETS = Path(os.environ.get("ARGOS_ASSETS", Path(__file__).resolve().parents[3] / "shared"))
WEIGHTS = ASSETS / "weights" / "yolov5n.pt"
PETS = ASSETS / "data" / "video" / "pets2009_s2l1_480x360.avi"

pytestmark = pytest.mark.skipif(not (WEIGHTS.is_file() and PETS.is_file()), reason=f"needs {WEIGHTS} and {PETS}")


def _decoded_frames(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_video_keeps_every_processed_frame(tmp_path, sig, code):
    out = tmp_path / "o"
    cmd = [sys.executable, "-m", "argos.cli", "run", str(PETS), "--weights", str(WEIGHTS), "--img-size", "320",
           "--limit", "400", "--threads", "1", "--out", str(out / "v.mp4"), "--json", str(out / "s.json"),
           "--no-progress"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    jsonl = out / "s.jsonl"
    # Signal at a frame that is not known in advance: after a few lines, plus a random wait.
    deadline = time.time() + 120
    want = 3 + int.from_bytes(os.urandom(1), "little") % 5
    while time.time() < deadline and proc.poll() is None:
        if jsonl.exists() and len(jsonl.read_text().splitlines()) >= want:
            break
        time.sleep(0.05)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    summary = json.loads((out / "s.json").read_text())
    lines = [json.loads(x) for x in jsonl.read_text().splitlines()]
    assert summary["interrupted"] is True and summary["ended"] == f"interrupted by {signal.Signals(sig).name}"
    assert 0 < summary["frames"] < 400
    assert len(lines) == summary["frames"]
    assert [x["frame"] for x in lines] == list(range(summary["frames"]))
    assert _decoded_frames(out / "v.mp4") == summary["frames"]
    assert f"after {summary['frames']} frames" in stderr
