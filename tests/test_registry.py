import numpy as np
import pytest

import argos
from argos.registry import Registry


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match="valid names: .*full, motion, oracle"):
        argos.PROPOSERS.get("qunett")
    with pytest.raises(ValueError, match="masked"):
        argos.EXECUTORS.get("nope")


def test_duplicates_refused():
    r = Registry("thing")
    r.register("a", lambda: 1)
    with pytest.raises(ValueError, match="already registered"):
        r.register("a", lambda: 2)


def test_lazy_entry_resolves():
    r = Registry("thing")
    r.register("od", "collections:OrderedDict")
    assert r.build("od") == {}
    with pytest.raises(TypeError):
        r.get(3)


@pytest.mark.parametrize("name", argos.list_proposers())
def test_every_proposer_builds_and_proposes(name):
    p = argos.PROPOSERS.build(name)
    if p.needs_detector:  # its first frame runs the teacher: give it a small real detector
        from argos.adapters.yolov5 import YOLOv5Adapter

        p.bind(YOLOv5Adapter(cfg="yolov5nu.yaml", img_size=64))
    image = np.zeros((48, 64, 3), np.uint8)
    targets = [{"boxes": [[4, 4, 20, 20]]}] if p.needs_targets else None
    (out,) = p.propose([image], targets)
    assert out.image_size == (48, 64)


@pytest.mark.parametrize("name", argos.list_executors())
def test_every_executor_builds(name):
    assert isinstance(argos.EXECUTORS.build(name), argos.executors.Executor)


@pytest.mark.parametrize("name", argos.list_adapters())
def test_every_adapter_resolves(name):
    assert issubclass(argos.ADAPTERS.get(name), argos.adapters.Adapter)
