"""``argos run SRC1 SRC2 ... --out-dir DIR --ray [ADDRESS]``: the multi-stream runner on Ray workers.

The sources are dealt round-robin into one share per worker. Each worker is a Ray actor that
builds the wrapped detector once and runs :class:`argos.tools.streams.StreamShare` (the same tick
loop as the single-process runner) over its share, ``chunk`` ticks per call. Detections come back
to this process, which alone writes ``DIR/<stem>.jsonl``, ``DIR/<stem>.json`` and
``DIR/summary.json``, in the formats of :func:`argos.tools.streams.run_streams`.

A worker that dies (killed, out of memory, its node lost) loses at most the chunk in hand. Its
streams that have not ended are started again on a new worker from the frame after the last one
written, with as many frames left as they had; the proposer state starts afresh there (a
temporal proposer's first frame after a restart is a key frame). No frame is written twice and
none is skipped. A share whose worker dies more than ``max_restarts`` times is reported per stream
in ``errors`` and the others go on.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

from argos.tools.outputs import check_outputs
from argos.tools.run import _record, _StopRequest
from argos.tools.streams import StreamShare, add_frame, finish_run, new_record, run_header, stream_paths

__all__ = ["run_streams_ray", "looks_like_ray_address"]


def looks_like_ray_address(text: str) -> bool:
    """``auto``, ``local``, ``ray://host:port`` or ``host:port``: what ``--ray`` takes as a cluster address."""
    return text in ("auto", "local") or "://" in text or re.fullmatch(r"[\w.\-]+:\d+", text) is not None


def _import_ray():
    try:
        import ray
    except ImportError as err:  # pragma: no cover - ray is in the dev extra
        raise ImportError("--ray needs the ray package: pip install 'argos-cv[ray]' (or pip install ray)") from err
    return ray


class _Worker:
    """One Ray actor: a wrapped detector and the share of streams it runs (see the module docstring)."""

    def __init__(self, build: Union[Dict[str, Any], Callable[[], Any]], threads: int) -> None:
        import torch

        from argos.wrap import wrap

        torch.set_num_threads(int(threads))
        self.fast = build() if callable(build) else wrap(**build)
        self.share: Optional[StreamShare] = None

    def pid(self) -> int:
        return os.getpid()

    def start(self, sources: List[Union[str, int]], starts: List[int], limits: List[Optional[int]], stride: int,
              compare: bool, min_score: float) -> Dict[str, Any]:
        self.share = StreamShare(self.fast, sources, compare=compare, stride=stride, starts=starts, limits=limits,
                                 min_score=min_score)
        return {"open": self.share.srcs.open, "errors": dict(self.share.srcs.errors),
                "names": dict(self.share.multi.adapter.names), "proposer": type(self.fast.proposer).__name__,
                "executor": type(self.fast.executor).__name__}

    def step(self, n: int) -> Dict[str, Any]:
        """Up to ``n`` ticks; ``done`` once every stream of the share has ended."""
        ticks = []
        done = False
        for _ in range(int(n)):
            out = self.share.tick()
            if out is None:
                done = True
                break
            out.pop("images")
            ticks.append(out)
        return {"ticks": ticks, "done": done, "running": self.share.srcs.running,
                "errors": dict(self.share.srcs.errors)}


def run_streams_ray(
    build: Union[Dict[str, Any], Callable[[], Any]],
    sources: Sequence[Union[str, int]],
    out_dir: Union[str, Path],
    address: Optional[str] = None,
    workers: Optional[int] = None,
    threads: int = 1,
    compare: bool = False,
    stride: int = 1,
    limit: Optional[int] = None,
    chunk: int = 8,
    progress: bool = True,
    min_score: float = 0.25,
    max_restarts: int = 3,
    on_chunk: Optional[Callable[[int, Any, int], None]] = None,
) -> Dict[str, Any]:
    """Run the multi-stream runner over ``sources`` on Ray workers; returns the ``summary.json`` dict.

    Args:
        build: the :func:`argos.wrap` arguments as a dict (``detector``, ``proposer``, ``executor``,
            ``proposer_kwargs``, ``executor_kwargs`` and adapter options), or a picklable function
            that returns a :class:`argos.Wrapped`. Each worker builds its own.
        address: a running cluster (``"auto"``, ``"ray://host:port"``); ``None`` or ``"local"``
            starts a local instance when none is running (and stops it at the end).
        workers: actors to place (default: as many as the cluster's CPUs allow at ``threads``
            each, at most one per source).
        threads: torch threads (and Ray CPUs) per worker.
        chunk: ticks per call; a dying worker loses at most this much work.
        max_restarts: restarts allowed per share before its streams are given up.
        on_chunk: called as ``on_chunk(share, actor, chunks_done)`` after each chunk is written
            (tests use it to kill a worker mid-run).
    """
    from tqdm import tqdm

    ray = _import_ray()
    from ray.exceptions import RayActorError

    if int(chunk) < 1 or int(threads) < 1 or int(max_restarts) < 0:
        raise ValueError(f"need chunk >= 1, threads >= 1, max_restarts >= 0; got {chunk}, {threads}, {max_restarts}")
    sources = [int(s) if isinstance(s, str) and s.isdigit() else s for s in sources]
    paths = stream_paths(sources, out_dir)
    check_outputs(sources, [p[k] for p in paths for k in ("jsonl", "json")] + [Path(out_dir) / "summary.json"], [])
    t_start = time.perf_counter()
    started_here = not ray.is_initialized()
    if started_here:
        local = address in (None, "local")
        ray.init(address=None if local else address, num_cpus=(os.cpu_count() or 1) if local else None,
                 include_dashboard=False, log_to_driver=False, configure_logging=False)
    try:
        cpus = int(ray.cluster_resources().get("CPU", 1))
        n_workers = int(workers) if workers else max(1, min(len(sources), cpus // int(threads)))
        if n_workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        n_workers = min(n_workers, len(sources))
        shares = [list(range(w, len(sources), n_workers)) for w in range(n_workers)]
        actor_cls = ray.remote(_Worker).options(num_cpus=int(threads), max_restarts=0)

        nxt = {g: 0 for g in range(len(sources))}  # first frame index still to run
        left: Dict[int, Optional[int]] = {g: limit for g in range(len(sources))}
        running = set(range(len(sources)))
        errors: Dict[int, str] = {}
        per = {g: new_record() for g in range(len(sources))}
        busy = {w: {"frames": 0, "ms": 0.0, "base_ms": 0.0} for w in range(n_workers)}
        lines: Dict[int, Any] = {}
        restarts = {w: 0 for w in range(n_workers)}
        members: Dict[int, List[int]] = {}
        actors: Dict[int, Any] = {}
        chunks = {w: 0 for w in range(n_workers)}
        info: Dict[str, Any] = {}

        def launch(w: int) -> Optional[Any]:
            """A fresh actor for share ``w``'s streams that are still running; None when none is left."""
            todo = [g for g in shares[w] if g in running and left[g] != 0]
            for g in shares[w]:
                if g in running and left[g] == 0:
                    running.discard(g)
            if not todo:
                return None
            actor = actor_cls.remote(build, int(threads))
            got = ray.get(actor.start.remote([sources[g] for g in todo], [nxt[g] for g in todo],
                                             [left[g] for g in todo], int(stride), bool(compare), float(min_score)))
            info.update({k: got[k] for k in ("names", "proposer", "executor")})
            for k, msg in got["errors"].items():
                errors[todo[k]] = msg
                running.discard(todo[k])
            for k in got["open"]:
                g = todo[k]
                if g not in lines:
                    lines[g] = open(paths[g]["jsonl"], "w")
            members[w], actors[w] = todo, actor
            return actor.step.remote(int(chunk))

        def died(w: int, err: Exception) -> Optional[Any]:
            restarts[w] += 1
            if restarts[w] > max_restarts:
                for g in members.get(w, shares[w]):
                    if g in running:
                        errors[g] = f"worker died {restarts[w]} times (last: {type(err).__name__}); gave up at frame {nxt[g]}"
                        running.discard(g)
                return None
            return launch(w)

        bar = tqdm(desc=f"{len(sources)} streams on {n_workers} Ray workers", unit="frame",
                   disable=not progress)
        pending: Dict[Any, int] = {}
        stop = _StopRequest()
        t_work = None
        try:
            with stop:
                for w in range(n_workers):
                    while True:
                        try:
                            ref = launch(w)
                            break
                        except RayActorError as err:
                            restarts[w] += 1
                            if restarts[w] > max_restarts:
                                raise RuntimeError(f"Ray worker {w} failed to start {restarts[w]} times") from err
                    if ref is not None:
                        pending[ref] = w
                t_work = time.perf_counter()
                while pending and stop.signal is None:
                    ready, _ = ray.wait(list(pending), num_returns=1)
                    ref = ready[0]
                    w = pending.pop(ref)
                    try:
                        res = ray.get(ref)
                    except RayActorError as err:
                        new = died(w, err)
                        if new is not None:
                            pending[new] = w
                        continue
                    todo = members[w]
                    for out in res["ticks"]:
                        busy[w]["ms"] += out["ms"]
                        busy[w]["base_ms"] += out["base_ms"] or 0.0
                        for k, fr in out["frames"].items():
                            g = todo[k]
                            lines[g].write(_record(fr["index"], fr["dets"], info["names"]) + "\n")
                            add_frame(per[g], fr, compare)
                            nxt[g] = fr["index"] + int(stride)
                            if left[g] is not None:
                                left[g] -= 1
                            busy[w]["frames"] += 1
                        bar.update(len(out["frames"]))
                    for g in todo:
                        if g in lines:
                            lines[g].flush()
                    for k, msg in res["errors"].items():
                        errors[todo[k]] = msg
                    still = {todo[k] for k in res["running"]}
                    for g in todo:
                        if g not in still:
                            running.discard(g)
                    chunks[w] += 1
                    if on_chunk is not None:
                        on_chunk(w, actors[w], chunks[w])
                    if not res["done"]:
                        pending[actors[w].step.remote(int(chunk))] = w
        except KeyboardInterrupt:
            stop.signal = stop.signal or "SIGINT"
        finally:
            bar.close()
            for f in lines.values():
                f.close()
            for a in actors.values():
                ray.kill(a)
        t_end = time.perf_counter()
    finally:
        if started_here:
            ray.shutdown()

    frames = sum(r["frames"] for r in per.values())
    summary: Dict[str, Any] = {
        **run_header(len(sources), frames, stop.signal),
        "workers": n_workers,
        "restarts": sum(restarts.values()),
        # Each worker's frames over its own step time, summed: the throughput of the pool.
        "fps_total": sum(1e3 * b["frames"] / b["ms"] for b in busy.values() if b["ms"]),
        "fps_wall": frames / (t_end - t_work) if t_work and t_end > t_work else 0.0,
        "startup_s": (t_work or t_end) - t_start,
        "config": {"proposer": info.get("proposer"), "executor": info.get("executor"), "stride": stride,
                   "limit": limit, "torch_threads": int(threads), "ray_address": address or "local",
                   "chunk": int(chunk)},
    }
    if compare and any(b["base_ms"] for b in busy.values()):
        summary["baseline_fps_total"] = sum(1e3 * b["frames"] / b["base_ms"] for b in busy.values() if b["base_ms"])
        summary["speedup"] = summary["fps_total"] / summary["baseline_fps_total"]
    return finish_run(summary, sources, paths, per, errors, set(lines), compare, min_score, out_dir)
