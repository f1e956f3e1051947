"""Old import paths keep working for one release, warn, and give the very same objects."""
from __future__ import annotations

import importlib
import subprocess
import sys

import pytest

# old path -> (new path, one public name both must give)
MOVED = {
    "argos.proposers.boxes": ("argos.geometry", "mask_to_boxes"),
    "argos.executors.sparse.conv": ("argos.sparse.conv", "SparseConv2d"),
    "argos.executors.sparse.convert": ("argos.sparse.convert", "convert"),
    "argos.executors.sparse.masks": ("argos.sparse.masks", "SparseContext"),
    "argos.bench": ("argos.tools.bench", "run_bench"),
    "argos.run": ("argos.tools.run", "run_stream"),
    "argos.proposers.qunet.train": ("argos.tools.qunet.train", "train"),
    "argos.proposers.qunet.bench": ("argos.tools.qunet.bench", "run_bench_proposer"),
    "argos.proposers.qunet.export": ("argos.tools.qunet.export", "compare_onnx"),
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_path_warns_and_aliases(old):
    new, name = MOVED[old]
    # A fresh interpreter: the alias is made once per process, at the first import.
    code = (
        "import warnings, importlib\n"
        f"new = importlib.import_module({new!r})\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        f"    old = importlib.import_module({old!r})\n"
        "for w in caught:\n"
        "    if w.category is DeprecationWarning: print('WARNED', w.message)\n"
        f"assert getattr(old, {name!r}) is getattr(new, {name!r})\n"
        "print('SAME')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert any(line.startswith(f"WARNED {old} is deprecated") and line.endswith(f"import {new} instead")
               for line in out.stdout.splitlines()), out.stdout
    assert "SAME" in out.stdout


def test_old_sparse_package_keeps_its_names():
    with pytest.warns(DeprecationWarning, match="argos.sparse"):
        sys.modules.pop("argos.executors.sparse", None)
        old = importlib.import_module("argos.executors.sparse")
    import argos.sparse as new

    assert old.convert is new.convert and old.SparseContext is new.SparseContext
    assert sorted(old.__all__) == sorted(new.__all__)


def test_old_module_path_still_runs_as_a_script():
    out = subprocess.run([sys.executable, "-W", "always::DeprecationWarning", "-m", "argos.proposers.qunet.bench",
                          "--help"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "usage:" in out.stdout
    assert "python -m argos.proposers.qunet.bench is deprecated" in out.stderr
    assert "python -m argos.tools.qunet.bench" in out.stderr


def test_names_moved_out_of_a_module_still_import():
    import argos.data.citypersons as new
    import argos.data.cityscapes as old

    with pytest.warns(DeprecationWarning, match="import it from argos.data.citypersons"):
        from argos.data.cityscapes import CityPersonsDataset
    assert CityPersonsDataset is new.CityPersonsDataset
    with pytest.warns(DeprecationWarning):
        assert old.SUBSETS is new.SUBSETS
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        old.nothing_here
