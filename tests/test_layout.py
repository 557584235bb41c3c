"""The package's layers: no module imports one of a higher layer (read from the source, imports in functions too)."""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "lightseg"

#: each top-level module or package of lightseg and its layer; a module imports only lower layers
#: (and its own package)
LAYERS = {
    # foundations: no lightseg import beyond these
    "errors": 0, "types": 0, "colors": 0, "run_folder": 0, "loggers": 0, "commands": 0,
    "contract": 1, "checkpoints": 1, "coco_masks": 1, "crf": 1, "losses": 1, "weights": 1, "optim": 1,
    "groups": 1, "inference": 2,
    "visualize": 1,
    "metrics": 2, "models": 2,
    # data and tasks are peers: neither imports the other
    "datamodules": 3, "tasks": 3,
    "callbacks": 4, "data_check": 4, "export": 4,
    "cli": 7,
    "tune": 8,
    "entry": 9,
    "__main__": 10,
}  # fmt: skip
#: pairs that meet only through lightseg.contract and what Lightning passes, whatever their layers
APART = {("callbacks", "tasks"), ("tasks", "callbacks"), ("datamodules", "metrics")}


def _imports(path: Path) -> set[str]:
    """The lightseg top-level names ``path`` imports."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules = [node.module]
        for module in modules:
            parts = module.split(".")
            if parts[0] == "lightseg" and len(parts) > 1:
                names.add(parts[1])
    return names


def test_every_module_has_a_layer_and_imports_only_lower_ones() -> None:
    tops = {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    tops |= {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert tops == set(LAYERS), f"give new modules a layer: {sorted(tops ^ set(LAYERS))}"
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        own = relative.parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        for imported in _imports(path) - {own}:
            if imported in LAYERS and LAYERS[imported] >= LAYERS[own]:
                upward.append(f"{relative} imports lightseg.{imported}")
            if (own, imported) in APART:
                upward.append(f"{relative} imports lightseg.{imported}: they meet through lightseg.contract")
    assert upward == []


def test_the_layer_check_sees_imports_inside_functions(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from lightseg.cli import main\n    import lightseg.tasks.semantic\n")
    assert _imports(source) == {"cli", "tasks"}
