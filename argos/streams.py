"""Several cameras through one detector: the crops of all streams share the executor's canvases.

A ``Wrapped`` serves one stream. :class:`MultiStream` holds one proposer state per stream
(students, temporal state and key frames are never shared) and one adapter and executor for all:
each :meth:`MultiStream.step` proposes per stream, then makes **one** executor call over every
stream's current frame, so ``packed_crops`` packs the crops of all cameras onto the same
canvases, and the batch holds only the pixels that matter, from every camera at once.

    ms = argos.streams(["cam0.mp4", "cam1.mp4"], "yolov5n.pt", proposer="auto", executor="auto")
    for tick in ms:                       # one frame of every stream still running
        for stream, (index, frame, dets) in tick.items():
            ...
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from argos.data.video import VideoReader
from argos.io import as_image_list
from argos.structures import Detections
from argos.wrap import Wrapped, _adapter_lock, run_members, wrap

__all__ = ["MultiStream", "Sources", "streams"]

Frame = Tuple[int, np.ndarray, Detections]


class MultiStream:
    """``n`` streams sharing ``wrapped``'s adapter and executor, each with its own proposer.

    Args:
        wrapped: the configuration; stream 0 uses it, the others :meth:`Wrapped.for_stream` copies.
        n: number of streams.

    Attributes:
        members (list[Wrapped]): one per stream; ``members[k].last_stats`` describes stream
            ``k``'s part of the last step (its proposer time and a share of the executor's).
    """

    def __init__(self, wrapped: Wrapped, n: int) -> None:
        if not isinstance(wrapped, Wrapped):
            raise TypeError(f"wrapped must be an argos Wrapped, got {type(wrapped).__name__}")
        if int(n) < 1:
            raise ValueError(f"need at least one stream, got n={n}")
        self.members: List[Wrapped] = [wrapped] + [wrapped.for_stream() for _ in range(int(n) - 1)]
        for m in self.members[1:]:
            m.executor = wrapped.executor  # one executor call packs every stream's crops

    @property
    def adapter(self):
        return self.members[0].adapter

    def __len__(self) -> int:
        return len(self.members)

    def step(self, frames: Mapping[int, Any], targets: Optional[Mapping[int, Any]] = None) -> Dict[int, Detections]:
        """One frame for each stream in ``frames`` (stream index -> image, in the members'
        ``channel_order``); streams left out keep their state. Returns stream index -> detections."""
        if not frames:
            return {}
        keys = sorted(frames)
        for k in keys:
            if not 0 <= k < len(self.members):
                raise IndexError(f"stream {k} out of range (0..{len(self.members) - 1})")
        members = [self.members[k] for k in keys]
        batches = []
        for k, m in zip(keys, members):
            batch, single = as_image_list(frames[k], m.channel_order)
            if not single:
                raise ValueError(f"stream {k}: step takes one image per stream, got {len(batch)}")
            if m.calibration is not None:
                m.calibration.check_frame(batch[0].shape)
            batches.append(batch)
        tg = [None if targets is None or targets.get(k) is None else [targets[k]] for k in keys]
        locks = [m._busy for m in members]
        taken = []
        try:
            for lock in locks:
                if not lock.acquire(blocking=False):
                    raise RuntimeError("a stream of this MultiStream is already processing a frame in another thread")
                taken.append(lock)
            with _adapter_lock(self.adapter):
                out = run_members(members, batches, tg)
        finally:
            for lock in taken:
                lock.release()
        return {k: d[0] for k, d in zip(keys, out)}

    def reset(self, stream: int) -> None:
        """Start stream ``stream``'s proposer afresh (a new scene, or a new frame size)."""
        self.members[stream].proposer.reset()


def streams(
    sources: Sequence[Union[str, int]],
    detector: Any,
    proposer: Any = "auto",
    executor: Any = "auto",
    *,
    stride: int = 1,
    limit: Optional[int] = None,
    errors: Optional[Dict[int, str]] = None,
    proposer_kwargs: Optional[Dict[str, Any]] = None,
    executor_kwargs: Optional[Dict[str, Any]] = None,
    **adapter_kwargs: Any,
) -> Iterator[Dict[int, Frame]]:
    """Run ``detector`` over several video sources at once, one tick at a time.

    Each tick yields ``{stream: (frame index, RGB frame, detections)}`` for every stream that still
    has frames; streams of different length, size and fps end independently. A source that fails
    to open (or to decode) is reported in ``errors`` (stream -> message, when given) and does not
    stop the others; with ``errors=None`` the first such failure raises.

    ``detector`` may also be a ready :class:`Wrapped`, used for stream 0 and copied for the others.
    """
    if isinstance(detector, Wrapped):
        if proposer_kwargs or executor_kwargs or adapter_kwargs:
            raise ValueError("options cannot be applied to a ready Wrapped")
        base = detector
    else:
        base = wrap(detector, proposer, executor, proposer_kwargs=proposer_kwargs,
                    executor_kwargs=executor_kwargs, **adapter_kwargs)
    base.channel_order = "rgb"
    multi = MultiStream(base, len(sources))
    sources_ = Sources(sources, multi, stride=stride, limit=limit, raise_errors=errors is None)
    while True:
        tick = sources_.next_tick()
        if not tick:
            break
        dets = multi.step({k: f for k, (_, f) in tick.items()})
        if errors is not None:
            errors.update(sources_.errors)
        yield {k: (index, frame, dets[k]) for k, (index, frame) in tick.items()}
    if errors is not None:
        errors.update(sources_.errors)


class Sources:
    """The video sources of a :class:`MultiStream`, read one tick at a time.

    A source that fails to open or to decode is recorded in :attr:`errors` (stream -> message) and
    drops out (or, with ``raise_errors``, raises). A stream whose frame size changes has its
    proposer started afresh. ``starts`` and ``limits`` (one per source) resume a stream part-way:
    its first frame index, and how many frames it has left (``None``: ``limit``).
    """

    def __init__(self, sources: Sequence[Union[str, int]], multi: MultiStream, stride: int = 1,
                 limit: Optional[int] = None, raise_errors: bool = False,
                 starts: Optional[Sequence[int]] = None, limits: Optional[Sequence[Optional[int]]] = None) -> None:
        starts = [0] * len(sources) if starts is None else list(starts)
        limits = [limit] * len(sources) if limits is None else [limit if n is None else n for n in limits]
        if len(starts) != len(sources) or len(limits) != len(sources):
            raise ValueError(f"need one start and one limit per source ({len(sources)}), "
                             f"got {len(starts)} and {len(limits)}")
        self.multi, self.raise_errors = multi, raise_errors
        self.errors: Dict[int, str] = {}
        self.readers: Dict[int, VideoReader] = {}
        self._iters: Dict[int, Iterator] = {}
        self._shapes: Dict[int, Tuple[int, ...]] = {}
        for k, src in enumerate(sources):
            try:
                self.readers[k] = VideoReader(src, stride=stride, limit=limits[k], start=starts[k])
                self._iters[k] = iter(self.readers[k])
            except (OSError, ValueError) as err:
                self._fail(k, err)

    def _fail(self, k: int, err: Exception) -> None:
        if self.raise_errors:
            raise err
        self.errors[k] = str(err)

    @property
    def running(self) -> List[int]:
        """Streams that have not ended yet."""
        return sorted(self._iters)

    @property
    def open(self) -> List[int]:
        """Streams that opened (whether or not they have ended since)."""
        return sorted(self.readers)

    def next_tick(self) -> Dict[int, Tuple[int, np.ndarray]]:
        """``{stream: (frame index, RGB frame)}`` for every stream that still has a frame; empty at the end."""
        tick: Dict[int, Tuple[int, np.ndarray]] = {}
        for k in list(self._iters):
            try:
                index, frame = next(self._iters[k])
            except StopIteration:
                del self._iters[k]
                if self.readers[k].error:
                    self.errors[k] = self.readers[k].error
                continue
            except (OSError, ValueError) as err:
                del self._iters[k]
                self._fail(k, err)
                continue
            if k in self._shapes and self._shapes[k] != frame.shape:
                self.multi.reset(k)
            self._shapes[k] = frame.shape
            tick[k] = (index, frame)
        return tick
