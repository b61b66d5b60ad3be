"""No function is longer than MAX_LINES unless the line above its `def` says why (`# long: <reason>`):
a unit a reader can hold at once (docs/architecture.md)."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAX_LINES = 80


def test_functions_are_short_or_say_why():
    long = []
    for folder in ("avatar3d", "viewer", "tools"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            lines = path.read_text().splitlines()
            for node in ast.walk(ast.parse("\n".join(lines), str(path))):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                length = node.end_lineno - node.lineno + 1
                first = (node.decorator_list[0].lineno if node.decorator_list else node.lineno) - 1
                reason = first > 0 and lines[first - 1].strip().startswith("# long:")
                if length > MAX_LINES and not reason:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert not long, (f"functions over {MAX_LINES} lines (split them, or write `# long: <reason>` above the def):\n"
                      + "\n".join(long))
