"""``argos.wrap``: one line from a detector to a region-proposal-driven detector."""
from __future__ import annotations

import copy
import threading
import time
import weakref
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from torch import nn

from argos._memory import release_free_memory
from argos.adapters.base import Adapter, predict_by_shape
from argos.executors.base import Executor
from argos.io import as_image_list
from argos.metrics.flops import counting_ms
from argos.proposers.base import Proposer
from argos.registry import ADAPTERS, EXECUTORS, PROPOSERS
from argos.structures import Detections, RegionProposals, SegmentationMap

__all__ = ["wrap", "Wrapped", "FrameStats", "build_adapter", "run_members"]


@dataclass
class FrameStats:
    """What the last call cost. Times are wall-clock ms for the whole call (all images);
    ``area_processed`` and GFLOPs are means per image. ``key_frames`` counts images a video
    proposer answered itself with the full-frame detector (their cost is in ``detector_ms``
    and ``gflops``)."""

    images: int = 0
    area_processed: float = 0.0
    regions: int = 0
    proposer_ms: float = 0.0
    detector_ms: float = 0.0
    overhead_ms: float = 0.0
    total_ms: float = 0.0
    gflops: float = 0.0
    gflops_proposer: float = 0.0
    key_frames: int = 0
    per_image_area: List[float] = field(default_factory=list)

    def as_dict(self) -> Dict[str, Any]:
        return asdict(self)


class Wrapped:
    """A detector that runs only where its proposer says objects may be.

    Call it with one image (HWC uint8 RGB array, CHW tensor or path) to get :class:`Detections`
    (a :class:`SegmentationMap` for segmentation adapters, whose pixels off the proposed mask hold
    the executor's background label), or with a list to get a list. ``last_stats`` describes the
    last call.

    Args:
        adapter: the detector.
        proposer: the region proposer.
        executor: how the detector runs on the regions.
        channel_order: ``"rgb"`` or ``"bgr"`` for numpy inputs (OpenCV frames are BGR).

    Threads: calls are serialized on the adapter (every ``Wrapped`` sharing one adapter takes the
    same lock), so several threads may call one ``Wrapped`` and get what serial calls give. A
    proposer that keeps one stream's state across frames (``stateful``: motion, distill, temporal)
    refuses a second thread's call while a first is in progress, with a ``RuntimeError``: two
    streams must not share that state. Give each stream its own with :meth:`for_stream`.
    """

    #: every this many calls, freed heap memory goes back to the OS (glibc ``malloc_trim``): inputs
    #: of many shapes otherwise make resident memory creep up over long streams. 0 turns it off.
    trim_every: int = 1000

    def __init__(self, adapter: Adapter, proposer: Proposer, executor: Executor, channel_order: str = "rgb") -> None:
        if channel_order not in ("rgb", "bgr"):
            raise ValueError(f"channel_order must be 'rgb' or 'bgr', got {channel_order!r}")
        self.adapter, self.proposer, self.executor = adapter, proposer, executor
        _check_task(adapter, proposer)
        executor.check_adapter(adapter)
        self.proposer.bind(adapter)
        self.channel_order = channel_order
        #: the camera calibration this configuration came from (:func:`wrap`'s ``calibration``), or None
        self.calibration = None
        self.last_stats = FrameStats()
        self.last_proposals: List[RegionProposals] = []
        self._busy = threading.Lock()
        self._calls = 0

    def for_stream(self) -> "Wrapped":
        """A ``Wrapped`` for another stream: the same adapter (one copy of the weights), its own
        proposer and executor state, started afresh."""
        memo = {id(self.adapter): self.adapter}
        proposer = copy.deepcopy(self.proposer, memo)
        executor = copy.deepcopy(self.executor, memo)
        proposer.reset()
        other = Wrapped(self.adapter, proposer, executor, self.channel_order)
        other.calibration = self.calibration
        return other

    def __call__(
        self, images: Any, targets: Optional[Sequence[Any]] = None
    ) -> Union[Detections, SegmentationMap, List[Detections], List[SegmentationMap]]:
        """Detect objects. ``targets`` (ground truth, one per image) only feeds the ``oracle`` proposer."""
        stateful = getattr(self.proposer, "stateful", False)
        if not self._busy.acquire(blocking=not stateful):
            raise RuntimeError(
                f"{type(self.proposer).__name__} keeps one stream's state, and this Wrapped is already "
                "processing a frame in another thread; give each stream its own with wrapped.for_stream() "
                "(it shares the model)"
            )
        try:
            with _adapter_lock(self.adapter):
                out = self._call(images, targets)
                self._calls += 1
                if self.trim_every and self._calls % self.trim_every == 0:
                    release_free_memory()
                return out
        finally:
            self._busy.release()

    def _call(self, images: Any, targets: Optional[Sequence[Any]]):
        batch, single = as_image_list(images, self.channel_order)
        if self.calibration is not None:
            for image in batch:
                self.calibration.check_frame(image.shape)
        if single and targets is not None and not isinstance(targets, (list, tuple)):
            targets = [targets]
        (dets,) = run_members([self], [batch], [targets])
        return dets[0] if single else dets

    def __repr__(self) -> str:
        return (
            f"Wrapped(adapter={type(self.adapter).__name__}, proposer={type(self.proposer).__name__}, "
            f"executor={type(self.executor).__name__})"
        )


def _run_key_frames(adapter, batches, proposals, prop_ms) -> None:
    """Fill the ``pending_whole`` key frames of all members: one detector call per frame size.
    Each gets an equal share of the call's time, counted as its member's proposer time (where an
    undeferred key frame's detection is counted too)."""
    pend = [(k, i) for k, ps in enumerate(proposals) for i, p in enumerate(ps) if p.pending_whole]
    if not pend:
        return
    t0 = time.perf_counter()
    outs, hws = predict_by_shape(adapter, [batches[k][i] for k, i in pend])
    ms = (time.perf_counter() - t0) * 1e3 / len(pend)
    for (k, i), d, hw in zip(pend, outs, hws):
        p = proposals[k][i]
        p.detections, p.detections_ms, p.detections_gflops = d, ms, adapter.flops(hw)
        p.time_ms += ms
        p.pending_whole = False
        prop_ms[k] += ms


def run_members(members: Sequence[Wrapped], batches: Sequence[List[Any]],
                targets: Sequence[Optional[Sequence[Any]]]) -> List[List[Detections]]:
    """One step of several streams that share one adapter and one executor: each member's
    proposer proposes on its own images, then **one** executor call runs every image that needs
    the detector (the packed-crops executor packs all their crops onto shared canvases), then each
    proposer observes its own detections. ``batches[k]`` are member ``k``'s validated RGB images;
    the caller holds the locks. Each member's ``last_stats`` gets its own proposer time and a
    share of the executor's time in proportion to its images run.

    With one member this is exactly ``Wrapped.__call__``.
    """
    first = members[0]
    adapter, executor = first.adapter, first.executor
    counted0 = counting_ms()
    # A proposer that tracks detections below the output threshold (``detect_conf``) has the
    # detector run at its threshold; only detections at the adapter's own ``conf`` come out.
    out_conf = getattr(adapter, "conf", None)
    detect_confs = {getattr(m.proposer, "detect_conf", None) for m in members}
    if len(detect_confs) > 1:
        raise ValueError(f"streams run together must share the proposer's detect_conf; got {sorted(map(str, detect_confs))}")
    detect_conf = detect_confs.pop()
    lowered = detect_conf is not None and out_conf is not None and detect_conf < out_conf
    t0 = time.perf_counter()
    proposals: List[List[RegionProposals]] = []
    prop_ms: List[float] = []
    if lowered:
        adapter.conf = detect_conf
    # Several streams: key frames are left to this function and run in one call per frame size.
    deferring = [m.proposer for m in members if len(members) > 1 and getattr(m.proposer, "can_defer_whole", False)]
    try:
        for p in deferring:
            p.defer_whole = True
        try:
            for m, batch, tg in zip(members, batches, targets):
                tp = time.perf_counter()
                proposals.append(m.proposer.propose(batch, tg))
                prop_ms.append((time.perf_counter() - tp) * 1e3)
        finally:
            for p in deferring:
                p.defer_whole = False
        _run_key_frames(adapter, batches, proposals, prop_ms)
        t1 = time.perf_counter()
        # Images whose proposer already produced final detections (video key frames) skip the executor.
        dets: List[List[Optional[Detections]]] = [[p.detections for p in ps] for ps in proposals]
        ex_gflops = [[0.0] * len(b) for b in batches]
        # Nothing proposed (a frame between motion-compensated key frames): nothing to run.
        for k, ps in enumerate(proposals):
            for i, p in enumerate(ps):
                if p.detections is None and p.boxes is not None and not len(p.boxes) and not bool(p.mask.any()):
                    dets[k][i] = executor._empty_output(adapter, tuple(p.mask.shape))
        todo = [(k, i) for k, ps in enumerate(proposals) for i, p in enumerate(ps) if dets[k][i] is None]
        ex_ms = 0.0
        if todo:
            out = executor.run(adapter, [batches[k][i] for k, i in todo], [proposals[k][i] for k, i in todo])
            ex = executor.last_stats
            ex_ms = ex.get("detector_ms", 0.0)
            for (k, i), d, g in zip(todo, out, ex.get("gflops", [0.0] * len(todo))):
                dets[k][i], ex_gflops[k][i] = d, g
        t2 = time.perf_counter()
    finally:
        if lowered:
            adapter.conf = out_conf
    results: List[List[Detections]] = []
    share = [sum(1 for k, _ in todo if k == j) / len(todo) if todo else 0.0 for j in range(len(members))]
    run_ms = (t2 - t1) * 1e3
    for k, (m, ps) in enumerate(zip(members, proposals)):
        tk = time.perf_counter()
        ds = dets[k]
        for i, p in enumerate(ps):
            if p.held is not None and len(p.held) and ds[i] is not None:
                ds[i] = Detections.cat([ds[i], p.held.to(ds[i].boxes.device)])
        seen = ds
        if lowered:
            ds = [d[d.scores >= out_conf] for d in ds]
        m.proposer.observe(seen)
        own_ms = (time.perf_counter() - tk) * 1e3
        areas = [p.area_fraction for p in ps]
        proposer_ms = prop_ms[k] - sum(p.detections_ms for p in ps)
        detector_ms = sum(p.detections_ms for p in ps) + share[k] * ex_ms
        # First sight of an input shape makes adapter.flops() run a counting forward: bookkeeping
        # for the stats, not inference, so it is left out of the times (all of it, with one member).
        counted = (counting_ms() - counted0) if len(members) == 1 else 0.0
        total_ms = prop_ms[k] + share[k] * run_ms + own_ms - counted
        if len(members) == 1:
            total_ms = (time.perf_counter() - t0) * 1e3 - counted
        m.last_proposals = ps
        n = len(batches[k])
        m.last_stats = FrameStats(
            images=n,
            area_processed=sum(areas) / n,
            regions=sum(len(p.boxes) for p in ps),
            proposer_ms=proposer_ms,
            detector_ms=detector_ms,
            overhead_ms=max(0.0, total_ms - proposer_ms - detector_ms),
            total_ms=total_ms,
            gflops=(sum(ex_gflops[k]) + sum(p.detections_gflops for p in ps)) / n,
            gflops_proposer=sum(p.gflops for p in ps) / n,
            per_image_area=areas,
            key_frames=sum(p.detections is not None for p in ps),
        )
        results.append(ds)
    return results


_ADAPTER_LOCKS: "weakref.WeakKeyDictionary[Adapter, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def _adapter_lock(adapter: Adapter) -> threading.RLock:
    """One lock per adapter: ``Wrapped`` lowers ``adapter.conf`` during a call, and executors keep
    per-call state, so calls that share an adapter must not overlap."""
    with _LOCKS_GUARD:
        lock = _ADAPTER_LOCKS.get(adapter)
        if lock is None:
            lock = _ADAPTER_LOCKS[adapter] = threading.RLock()
        return lock


def _check_task(adapter: Adapter, proposer: Proposer) -> None:
    """Proposers that learn from the wrapped model (``needs_detector``) read its detections."""
    task = getattr(adapter, "task", "detection")
    if task != "detection" and getattr(proposer, "needs_detector", False):
        raise ValueError(
            f"{type(proposer).__name__} learns from the wrapped model's detections and cannot use a {task} "
            f"adapter ({type(adapter).__name__}); use a proposer such as 'full', 'oracle', 'motion' or 'qunet'"
        )


def build_adapter(detector: Any, **adapter_kwargs: Any) -> Adapter:
    """Adapter from a registered name, a checkpoint path (``.pt``; ``.onnx`` runs under ONNX
    Runtime, or OpenVINO with ``backend="openvino"``), an ultralytics ``YOLO``, a yolov5 hub
    model, or an :class:`Adapter` instance (returned as is)."""
    if isinstance(detector, Adapter):
        if adapter_kwargs:
            raise ValueError(f"options {sorted(adapter_kwargs)} cannot be applied to an adapter instance")
        return detector
    if isinstance(detector, (str, Path)):
        name = str(detector)
        if name in ADAPTERS:
            return ADAPTERS.build(name, **adapter_kwargs)
        if name.lower().endswith((".pt", ".pth", ".onnx", ".engine", ".tflite")):
            if not Path(name).exists():
                raise FileNotFoundError(f"detector checkpoint not found: {name}")
            if name.lower().endswith(".onnx"):  # ONNX Runtime, or OpenVINO with backend="openvino"
                return ADAPTERS.build("onnx", weights=name, **adapter_kwargs)
            return ADAPTERS.build("yolov5", weights=name, **adapter_kwargs)
        ADAPTERS.get(name)  # raises ValueError listing the valid names
    if _is_ultralytics_yolo(detector) or (
        isinstance(detector, nn.Module) and hasattr(detector, "names") and hasattr(detector, "stride")
    ):
        return ADAPTERS.build("yolov5", model=detector, **adapter_kwargs)
    raise TypeError(
        "detector must be an adapter name (one of: " + ", ".join(ADAPTERS.names()) + "), a checkpoint path, "
        f"an ultralytics YOLO object, a yolov5 hub model or an argos Adapter; got {type(detector).__name__}"
    )


def _is_ultralytics_yolo(obj: Any) -> bool:
    return any(c.__module__.startswith("ultralytics") and c.__name__ in ("YOLO", "Model") for c in type(obj).__mro__)


#: what ``proposer="auto"`` / ``executor="auto"`` mean for detectors on video: the configuration
#: that measured best (benchmarks/RESULTS.md, "Session 7"; tuned on PETS frames 0-149, held out:
#: PETS 300-499, the intel clip from frame 150, HD frames 100-169). The temporal proposer runs the
#: detector on every other frame and moves the boxes in between by their measured motion
#: (:data:`AUTO_OPTIONS`). Between key frames nothing is proposed, so the executor stays idle
#: unless options that propose regions there (``newcomers``, a ``track_score`` below ``hold_score``)
#: are given.
AUTO = {"proposer": "temporal", "executor": "packed_crops"}

#: the options of the auto configuration; ``"conf"`` stands for the adapter's own score threshold
AUTO_OPTIONS = {
    "proposer": {"max_interval": 2, "hold_score": "conf", "track_score": "conf", "velocity": True,
                 "newcomers": False},
    "executor": {},
}


def _resolve_auto(spec, kind: str, adapter) -> Any:
    if not (isinstance(spec, str) and spec == "auto"):
        return spec
    if getattr(adapter, "task", "detection") != "detection":
        raise ValueError(f'{kind}="auto" is defined for detectors only; name a {kind} for a '
                         f'{adapter.task} model (see argos.list_{kind}s())')
    return AUTO[kind]


def auto_options(spec, kind: str, adapter, given: Optional[Dict[str, Any]]) -> Dict[str, Any]:
    """The auto configuration's options for ``kind`` under the caller's own (``given`` wins)."""
    if not (isinstance(spec, str) and spec == "auto"):
        return dict(given or {})
    conf = float(getattr(adapter, "conf", 0.25) or 0.25)
    opts = {k: (conf if v == "conf" else v) for k, v in AUTO_OPTIONS[kind].items()}
    return {**opts, **(given or {})}


def _build(registry, spec, base, kwargs):
    if isinstance(spec, base):
        if kwargs:
            raise ValueError(f"options {sorted(kwargs)} cannot be applied to a {registry.kind} instance")
        return spec
    if isinstance(spec, str):
        return registry.build(spec, **kwargs)
    raise TypeError(f"{registry.kind} must be a name ({', '.join(registry.names())}) or a {base.__name__}, got {type(spec).__name__}")


def wrap(
    detector: Any,
    proposer: Union[str, Proposer] = "full",
    executor: Union[str, Executor] = "masked",
    *,
    proposer_kwargs: Optional[Dict[str, Any]] = None,
    executor_kwargs: Optional[Dict[str, Any]] = None,
    channel_order: str = "rgb",
    calibration: Any = None,
    **adapter_kwargs: Any,
) -> Wrapped:
    """Wrap a detector: ``argos.wrap("yolov5", weights="yolov5n.pt", proposer="motion")``.

    Args:
        detector: adapter name, checkpoint path, ultralytics ``YOLO``, yolov5 hub model or Adapter.
        proposer, executor: registered names or instances; ``"auto"`` picks the measured best for
            detectors on video (:data:`AUTO` with :data:`AUTO_OPTIONS`: the temporal proposer's
            motion-compensated key frames every other frame, packed crops).
        proposer_kwargs, executor_kwargs: options for the named proposer / executor.
        channel_order: ``"rgb"`` or ``"bgr"`` for numpy frames.
        calibration: a camera's calibration file (``argos calibrate``) or :class:`argos.calibration.Calibration`:
            ``"auto"`` then means its choice, and a detector with other classes or input size is
            refused. ``Wrapped.calibration`` keeps it (:meth:`~argos.calibration.Calibration.check_frame`).
        **adapter_kwargs: options for the adapter (``weights``, ``img_size``, ``conf``, ...).
    """
    # Unknown names fail before a model loads.
    for spec, registry in ((proposer, PROPOSERS), (executor, EXECUTORS)):
        if isinstance(spec, str) and spec != "auto":
            registry.get(spec)
    cal = None
    if calibration is not None:
        from argos.calibration import Calibration, load_calibration

        cal = calibration if isinstance(calibration, Calibration) else load_calibration(calibration)
        for spec, kind in ((proposer, "proposer"), (executor, "executor")):
            if not (isinstance(spec, str) and spec == "auto"):
                raise ValueError(f"a calibration chooses the {kind}; leave {kind}=\"auto\" (got {spec!r}), "
                                 "or run without the calibration")
        proposer, executor = cal.proposer, cal.executor
        proposer_kwargs = {**cal.proposer_kwargs, **(proposer_kwargs or {})}
        executor_kwargs = {**cal.executor_kwargs, **(executor_kwargs or {})}
        if "img_size" not in adapter_kwargs and cal.img_size and isinstance(detector, str):
            adapter_kwargs["img_size"] = cal.img_size
    adapter = build_adapter(detector, **adapter_kwargs)
    if cal is not None:
        cal.check_detector(adapter.names, getattr(adapter, "img_size", None))
    prop = _build(PROPOSERS, _resolve_auto(proposer, "proposer", adapter), Proposer,
                  auto_options(proposer, "proposer", adapter, proposer_kwargs))
    ex = _build(EXECUTORS, _resolve_auto(executor, "executor", adapter), Executor,
                auto_options(executor, "executor", adapter, executor_kwargs))
    wrapped = Wrapped(adapter, prop, ex, channel_order=channel_order)
    wrapped.calibration = cal
    return wrapped
