"""The package's layering, checked from the source: no import runs upward, and no module cycle.

Every ``import`` and ``from ... import`` in every module of ``argos/`` counts, including lazy
imports inside functions. The checker is plain :mod:`ast`; it never imports the modules.

Layers, bottom to top (a module may import from its own unit or from a lower layer only):

0. core: ``structures``, ``registry``, ``io``, ``geometry``, ``fusion``, ``assets``, ``viz``,
   ``testing``, ``calibration`` (these may import one another; cycles are still refused)
1. ``data``, ``metrics``
2. ``sparse`` (primitives that both an adapter and an executor use)
3. ``adapters``
4. ``proposers`` and ``executors``, side by side (neither imports the other)
5. ``wrap``
6. ``streams`` (several cameras through one ``wrap``)
7. ``argos`` itself (the ``__init__`` facade)
8. ``tools`` (bench, run, pareto, QU-Net train/bench/export)
9. ``cli``

Deprecated shims (modules that set ``__deprecated_shim__ = True``) keep old import paths alive for
users; they are exempt as importers, and nothing inside ``argos`` may import them.
"""
from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Set, Tuple

import pytest

PACKAGE_ROOT = Path(__file__).resolve().parents[1] / "argos"

LAYERS: Sequence[Tuple[str, ...]] = (
    ("argos.structures", "argos.registry", "argos.io", "argos.geometry", "argos.fusion",
     "argos.assets", "argos.viz", "argos.testing", "argos._deprecation", "argos._memory", "argos._onnxruntime", "argos.calibration"),
    ("argos.data", "argos.metrics"),
    ("argos.sparse",),
    ("argos.adapters",),
    ("argos.proposers", "argos.executors"),
    ("argos.wrap",),
    ("argos.streams",),
    ("argos",),
    ("argos.tools",),
    ("argos.cli",),
)
#: Units of the bottom layer may import one another (the cycle check still applies).
OPEN_LAYERS = {0}


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    path: str
    line: int

    def __str__(self) -> str:
        return f"{self.source} -> {self.target} ({self.path}:{self.line})"


def module_files(root: Path) -> Dict[str, Path]:
    """Dotted module name -> file, for every ``.py`` under ``root`` (a package directory)."""
    out = {}
    for p in sorted(root.rglob("*.py")):
        parts = list(p.relative_to(root.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = p
    return out


def _resolve(name: str, modules: Dict[str, Path]) -> Optional[str]:
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def is_shim(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "__deprecated_shim__" for t in node.targets):
            return True
    return False


def import_edges(modules: Dict[str, Path], root: Path, top: str = "argos") -> List[Edge]:
    """Every import of one of ``modules`` by another, lazy ones included."""
    edges = []
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(tree):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                    mod = ".".join(base + ([node.module] if node.module else []))
                else:
                    mod = node.module or ""
                # ``from argos.x import y`` imports the submodule argos.x.y when there is one.
                targets = [f"{mod}.{a.name}" if f"{mod}.{a.name}" in modules else mod for a in node.names]
            for t in targets:
                if t != top and not t.startswith(top + "."):
                    continue
                resolved = _resolve(t, modules)
                if resolved and resolved != name:
                    edges.append(Edge(name, resolved, str(path.relative_to(root.parent)), node.lineno))
    return edges


def unit_of(module: str, layers: Sequence[Tuple[str, ...]] = LAYERS) -> Tuple[int, str]:
    """(layer index, unit) of a module: the longest unit prefix that names it."""
    best = None
    for i, units in enumerate(layers):
        for u in units:
            if module == u or module.startswith(u + ".") and u != "argos":
                if best is None or len(u) > len(best[1]):
                    best = (i, u)
    if best is None:
        raise LookupError(f"{module} is in no layer: add it to LAYERS in tests/test_layering.py")
    return best


def upward_edges(edges: Sequence[Edge], shims: Set[str]) -> List[str]:
    bad = []
    for e in edges:
        if e.source in shims:
            continue
        if e.target in shims:
            bad.append(f"{e}: imports a deprecated shim; import the new path")
            continue
        (ls, us), (lt, ut) = unit_of(e.source), unit_of(e.target)
        if us == ut or lt < ls or (lt == ls and ls in OPEN_LAYERS):
            continue
        how = "upward" if lt > ls else "sideways"
        bad.append(f"{e}: {how} import from layer {ls} ({us}) to layer {lt} ({ut})")
    return list(dict.fromkeys(bad))


def find_cycles(edges: Sequence[Edge], shims: Set[str]) -> List[List[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    graph: Dict[str, Set[str]] = {}
    for e in edges:
        if e.source in shims:
            continue
        graph.setdefault(e.source, set()).add(e.target)
        graph.setdefault(e.target, set())
    index: Dict[str, int] = {}
    low: Dict[str, int] = {}
    stack: List[str] = []
    on: Set[str] = set()
    out: List[List[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check(root: Path = PACKAGE_ROOT) -> List[str]:
    modules = module_files(root)
    shims = {m for m, p in modules.items() if is_shim(p)}
    edges = import_edges(modules, root)
    problems = upward_edges(edges, shims)
    problems += ["import cycle: " + " <-> ".join(c) for c in find_cycles(edges, shims)]
    return problems


def test_no_upward_imports_and_no_cycles():
    problems = check()
    assert not problems, "layering violations:\n" + "\n".join(problems)


def test_every_module_is_in_a_layer():
    for module, path in module_files(PACKAGE_ROOT).items():
        if not is_shim(path):
            unit_of(module)


def _tree(tmp_path: Path, files: Dict[str, str]) -> Path:
    root = tmp_path / "argos"
    for rel, text in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    for d in [root, *[p for p in root.rglob("*") if p.is_dir()]]:
        (d / "__init__.py").touch()
    return root


def test_checker_catches_an_upward_import(tmp_path):
    root = _tree(tmp_path, {
        "structures.py": "import numpy\n",
        "adapters/base.py": "from argos.structures import x\n",
        # lazy, inside a function, still counts:
        "proposers/base.py": "def f():\n    from argos.wrap import wrap\n",
        "wrap.py": "from argos.proposers.base import f\n",
    })
    problems = check(root)
    assert any("argos.proposers.base -> argos.wrap" in p and "upward" in p for p in problems), problems
    assert any(p.startswith("import cycle:") and "argos.wrap" in p for p in problems), problems
    assert not any("argos.adapters.base -> argos.structures" in p for p in problems)


def test_checker_catches_sideways_and_shim_imports(tmp_path):
    root = _tree(tmp_path, {
        "executors/packed.py": "import argos.proposers.base\n",
        "proposers/base.py": "",
        "proposers/old.py": "__deprecated_shim__ = True\nfrom argos.geometry import *\n",
        "proposers/user.py": "from argos.proposers.old import thing\n",
        "geometry.py": "",
    })
    problems = check(root)
    assert any("argos.executors.packed -> argos.proposers.base" in p and "sideways" in p for p in problems), problems
    assert any("argos.proposers.user -> argos.proposers.old" in p and "shim" in p for p in problems), problems
    # the shim itself importing downward (or anywhere) is not reported
    assert not any(p.startswith("argos.proposers.old ->") for p in problems)
