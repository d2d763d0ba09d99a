"""The package's layering (docs/architecture.md): a part of sinklens imports only the
parts before it in `LAYERS`, at module level or inside a function alike. This keeps the
folders' data flow true and rules out import cycles between parts."""

import ast
from pathlib import Path

import sinklens

# Bottom to top; the same order as docs/architecture.md.
LAYERS = (
    "errors",
    "settings",
    "metrics",
    "provenance",
    "outputs",
    "batching",
    "data",
    "gguf",
    "real_models",
    "checkpoint",
    "comparable",
    "models",
    "capture",
    "cache",
    "evaluate",
    "organism",
    "analyze",
    "patching",
    "unlearn",
    "attacks",
    "defend",
    "study",
    "figures",
    "reproduce",
    "cli",
)
ROOT = Path(sinklens.__file__).parent


def _part(path: Path) -> str:
    return path.relative_to(ROOT).with_suffix("").parts[0]


def _imported_parts(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = (
            [node.module]
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0
            else [a.name for a in node.names]
            if isinstance(node, ast.Import)
            else []
        )
        found |= {n.split(".")[1] for n in names if n.startswith("sinklens.")}
    return found


def test_every_part_of_the_package_has_a_layer():
    parts = {_part(p) for p in ROOT.rglob("*.py")} - {"__init__", "__main__"}
    assert parts == set(LAYERS), "add the new part to LAYERS and docs/architecture.md"


def test_each_part_imports_only_the_layers_below_it():
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        part = _part(path)
        if part in ("__init__", "__main__"):
            continue
        below = set(LAYERS[: LAYERS.index(part)])
        for target in sorted(_imported_parts(path) - {part} - below):
            wrong.append(f"{path.relative_to(ROOT)} imports sinklens.{target}")
    assert not wrong, "\n".join(wrong)


def test_the_layers_are_written_down_in_the_docs():
    text = (ROOT.parent / "docs" / "architecture.md").read_text(encoding="utf-8")
    positions = [text.find(f"`{part}`") for part in LAYERS]
    assert -1 not in positions, [p for p, at in zip(LAYERS, positions, strict=True) if at == -1]
    assert positions == sorted(positions), "docs/architecture.md lists the layers out of order"
