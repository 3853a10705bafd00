"""The package's dependencies point one way: each module imports only from its own layer or the layers below.

The layers, lowest first (docs/layout.md draws them). A module that reaches up (evaluation importing
a recipe, the server importing the training recipe) fails this test, naming the import.
"""

import ast
from pathlib import Path

import tunesmith

LAYERS = [
    {"errors", "console", "tasks", "versions", "cache"},
    {"config", "project"},
    {"data"},
    {"models"},
    {"fastpath"},
    {"train"},
    {"inference"},
    {"evaluate"},
    {"report"},
    {"runs", "tracking", "monitor"},
    {"steps"},
    {"recipes", "ops", "plan"},
    {"serve", "web"},
    {"cli", "__main__"},
]
LEVEL = {name: i for i, layer in enumerate(LAYERS) for name in layer}
ROOT = Path(tunesmith.__file__).parent


def _part(module: str) -> str | None:
    """``tunesmith.X.Y`` -> ``X`` (the top-level part), else None."""
    bits = module.split(".")
    return bits[1] if bits[0] == "tunesmith" and len(bits) > 1 else None


def test_every_module_is_in_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in ROOT.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert parts <= set(LEVEL), f"place these in a layer: {sorted(parts - set(LEVEL))}"


def test_imports_point_down():
    upward = []
    for path in ROOT.rglob("*.py"):
        rel = path.relative_to(ROOT)
        own = rel.parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names] if node.module == "tunesmith" \
                    else [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", None)) in (
                    "import_module", "lazy") and node.args and isinstance(node.args[0], ast.Constant):
                names = [str(node.args[0].value)]  # the CLI's deferred imports count too
            for name in names:
                part = _part(name)
                if part in LEVEL and LEVEL[part] > LEVEL[own]:
                    upward.append(f"{rel}:{node.lineno} imports {name} ({part} is above {own})")
    assert not upward, "\n".join(upward)
