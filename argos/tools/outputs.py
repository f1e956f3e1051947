"""Checks on output paths, made before any frame is processed, so a bad path never costs a run."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional, Union

__all__ = ["check_outputs", "VIDEO_SUFFIXES"]

PathLike = Union[str, os.PathLike]

#: Containers the mp4v/MJPG writers of OpenCV can finalize.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv")


def _same(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def check_outputs(inputs: Iterable[Optional[PathLike]], outputs: Iterable[Optional[PathLike]],
                  video_outputs: Iterable[Optional[PathLike]] = ()) -> None:
    """Refuse outputs that would overwrite an input, sit in a directory that cannot be written, or
    are directories; create missing parent directories.

    Raises:
        ValueError: an output is an input, is an existing directory, appears twice, or (for
            ``video_outputs``) has a suffix no video writer here can finalize.
        PermissionError: an output's directory is not writable.
    """
    ins = [Path(p) for p in inputs if p is not None and not isinstance(p, int) and "://" not in str(p)]
    outs = [Path(p) for p in outputs if p is not None]
    vids = [Path(p) for p in video_outputs if p is not None]
    seen = {}
    for out in outs + vids:
        key = os.path.abspath(out)
        if key in seen:
            raise ValueError(f"{out} is given as two outputs; each output needs its own path")
        seen[key] = out
        for src in ins:
            if os.path.abspath(src) == key or _same(src, out):
                raise ValueError(f"output {out} is the input {src}; choose another path so the input is not overwritten")
        if out.is_dir():
            raise ValueError(f"output {out} is a directory; give a file path")
    for v in vids:
        if v.suffix.lower() not in VIDEO_SUFFIXES:
            raise ValueError(f"cannot write video {v}: use one of {', '.join(VIDEO_SUFFIXES)}")
    for out in outs + vids:
        parent = out.parent if str(out.parent) else Path(".")
        for above in [parent, *parent.parents]:
            if above.exists():
                if not above.is_dir():
                    raise ValueError(f"cannot write output {out}: {above} is a file, not a directory")
                break
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise PermissionError(f"cannot create the directory of output {out}: {err.strerror or err}") from err
        if not os.access(parent, os.W_OK | os.X_OK):
            raise PermissionError(f"cannot write output {out}: directory {parent} is not writable")
        if out.exists() and not os.access(out, os.W_OK):
            raise PermissionError(f"cannot write output {out}: the file exists and is read-only")
