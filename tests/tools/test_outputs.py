"""tools.outputs.check_outputs: outputs are refused before a run when they would destroy an input."""
from __future__ import annotations

import os

import pytest

from argos.tools.outputs import check_outputs


def test_an_output_that_is_the_input_under_another_name_is_refused(tmp_path):
    video = tmp_path / "cam.mp4"
    video.write_bytes(b"frames")
    link = tmp_path / "alias.mp4"
    os.link(video, link)  # same file, another path
    with pytest.raises(ValueError, match="is the input"):
        check_outputs([video], [], [link])
    with pytest.raises(ValueError, match="is the input"):
        check_outputs([str(video)], [tmp_path / "." / "cam.mp4"])
    assert video.read_bytes() == b"frames"


def test_duplicates_directories_and_suffixes(tmp_path):
    with pytest.raises(ValueError, match="given as two outputs"):
        check_outputs([], [tmp_path / "a.json", tmp_path / "a.json"])
    (tmp_path / "d").mkdir()
    with pytest.raises(ValueError, match="is a directory"):
        check_outputs([], [tmp_path / "d"])
    with pytest.raises(ValueError, match="use one of .mp4"):
        check_outputs([], [], [tmp_path / "v.gif"])
    (tmp_path / "f").write_text("x")
    with pytest.raises(ValueError, match="is a file, not a directory"):
        check_outputs([], [tmp_path / "f" / "deeper" / "s.json"])


def test_missing_directories_are_created_and_cameras_are_not_paths(tmp_path):
    out = tmp_path / "a" / "b" / "s.json"
    check_outputs([0, "rtsp://cam/1"], [out], [tmp_path / "a" / "v.mp4"])
    assert out.parent.is_dir() and not out.exists()
