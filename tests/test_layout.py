"""The package's shape: one import name, and imports that run one way."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FOLDERS = ("server", "channels", "actors", "presence")


def _imports(folder: str) -> Iterator[tuple[Path, int, str]]:
    for path in sorted((ROOT / folder).rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                yield path, node.lineno, node.module
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, node.lineno, alias.name


def test_every_module_imports_the_project_as_switchboard_never_by_folder_name() -> None:
    bare = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for folder in (*FOLDERS, "tests", "loadtest")
        if (ROOT / folder).is_dir()
        for path, line, module in _imports(folder)
        if module.split(".")[0] in FOLDERS
    ]
    assert bare == []


def test_channels_never_import_the_server() -> None:
    backwards = [
        f"{path.relative_to(ROOT)}:{line} imports {module}"
        for path, line, module in _imports("channels")
        if module.startswith("switchboard.server")
    ]
    assert backwards == []
