"""The packages import only downward, in the order of docs/architecture.md's layer table.

Every `import` in the source is read (module level and inside functions, which hide cycles from a plain
import), so a new upward import fails here with the file, the line and the two layers named. A second check
imports the runtime packages in a fresh interpreter (`python -c`) and shows that none of them pulls in
training, evaluation or the pipeline.
"""
from __future__ import annotations

import ast
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Bottom to top. A unit may import its own modules and any unit in a lower layer; units in one layer are
# independent of each other. "core" is the top-level modules of avatar3d/ (errors, paths, runtime, ...).
LAYERS: list[tuple[str, ...]] = [
    ("core",),
    ("io",),
    ("render",),
    ("head",),
    ("gaussians", "tracking"),
    ("drive", "audio2expr"),
    ("export",),
    ("api",),
    ("training", "eval"),
    ("pipeline", "viewer", "benchmarks"),
    ("commands", "cli"),
    ("batch",),
]
RANK = {unit: rank for rank, units in enumerate(LAYERS) for unit in units}
TOP_LEVEL = {"api", "cli"}  # top-level modules of avatar3d/ that are units of their own (not core)
RUNTIME = ["avatar3d.api", "avatar3d.export.clip", "avatar3d.export.splat", "avatar3d.export.rig_bundle",
           "avatar3d.gaussians.avatar_render", "avatar3d.gaussians.store", "avatar3d.audio2expr.infer"]


def _sources() -> dict[str, Path]:
    """Module name -> file, for avatar3d and the viewer (installed as avatar3d_viewer)."""
    found = {}
    for folder, package in ((ROOT / "avatar3d", "avatar3d"), (ROOT / "viewer", "avatar3d_viewer")):
        for path in folder.rglob("*.py"):
            parts = [package, *path.relative_to(folder).with_suffix("").parts]
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def _unit(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "avatar3d_viewer":
        return "viewer"
    if len(parts) == 1:
        return "core"
    if len(parts) == 2 and not (ROOT / "avatar3d" / parts[1]).is_dir():
        return parts[1] if parts[1] in TOP_LEVEL else "core"
    return parts[1]


def _imports(module: str, path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import of our packages in `path`."""
    is_package = path.name == "__init__.py"
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[:len(base) - node.level + (1 if is_package else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out += [(f"{target}.{alias.name}", node.lineno) for alias in node.names]  # a module or a name
    return [(t, line) for t, line in out if t.split(".")[0] in ("avatar3d", "avatar3d_viewer")]


def _edges() -> list[tuple[str, str, int, Path]]:
    """(importing module, imported module, line, file); `from avatar3d.x import name` resolves to the module
    `avatar3d.x.name` where there is one, else to `avatar3d.x`."""
    sources = _sources()
    edges = []
    for module, path in sources.items():
        for target, line in _imports(module, path):
            while target and target not in sources:
                target = target.rpartition(".")[0]
            if target:
                edges.append((module, target, line, path))
    return edges


def test_every_unit_has_a_layer():
    units = {_unit(m) for m in _sources()}
    assert units <= set(RANK), f"packages without a layer in LAYERS (add them, and to docs/architecture.md): " \
                               f"{sorted(units - set(RANK))}"


def test_packages_import_only_downward():
    upward = []
    for module, target, line, path in _edges():
        a, b = _unit(module), _unit(target)
        if a != b and RANK[b] >= RANK[a]:
            upward.append(f"{path.relative_to(ROOT)}:{line}: {a} (layer {RANK[a]}) imports {target} "
                          f"({b}, layer {RANK[b]})")
    assert not upward, "upward or sideways imports:\n" + "\n".join(upward)


def test_no_import_cycles_between_modules():
    graph = defaultdict(set)
    for module, target, _, _ in _edges():
        if target != module and not module.startswith(target + "."):  # a package's own __init__ is no cycle
            graph[module].add(target)
    assert not _cycles(graph), f"modules that import each other: {_cycles(graph)}"


def _cycles(graph: dict[str, set[str]]) -> list[tuple[str, ...]]:
    """The groups of modules that reach themselves through their imports (a few hundred modules: plain
    reachability per module is quick enough)."""
    def reach(start: str) -> set[str]:
        seen, todo = set(), list(graph.get(start, ()))
        while todo:
            node = todo.pop()
            if node not in seen:
                seen.add(node)
                todo.extend(graph.get(node, ()))
        return seen

    reachable = {module: reach(module) for module in list(graph)}
    return sorted({tuple(sorted({m} | {o for o in reachable[m] if m in reachable.get(o, ())}))
                   for m in reachable if m in reachable[m]})


def test_a_new_upward_import_is_caught(tmp_path, monkeypatch):
    """The check itself: a head module that imports training is reported (the test cannot pass blindly)."""
    fake = tmp_path / "avatar3d"
    (fake / "head").mkdir(parents=True)
    (fake / "training").mkdir()
    (fake / "head" / "bad.py").write_text("def f():\n    from avatar3d.training.trainer import train_gaussians\n")
    (fake / "training" / "trainer.py").write_text("import avatar3d.head.bad\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    with pytest.raises(AssertionError, match=r"head/bad.py:2: head \(layer 3\) imports avatar3d.training.trainer"):
        test_packages_import_only_downward()
    (fake / "head" / "bad.py").write_text("import avatar3d.head.other\n")
    (fake / "head" / "other.py").write_text("from avatar3d.head import bad\n")
    with pytest.raises(AssertionError, match="avatar3d.head.bad"):
        test_no_import_cycles_between_modules()


def test_runtime_packages_load_no_training_or_pipeline():
    """`python -c "import avatar3d.api ..."`: showing an avatar loads no training, evaluation or pipeline code."""
    code = ("import sys, " + ", ".join(RUNTIME) + "; print(' '.join(sorted(m for m in sys.modules if "
            "m.startswith(('avatar3d.training', 'avatar3d.eval', 'avatar3d.pipeline', 'avatar3d.commands')))))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", f"importing {RUNTIME} loaded: {out.stdout.strip()}"
