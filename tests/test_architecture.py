"""The storage boundary: every Redis command and script of scanstream lives in
scanstream/storage, so a newcomer finds all of them in one folder."""

from __future__ import annotations

import ast
import os
from collections.abc import Iterator
from pathlib import Path

import scanstream.storage

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("scanstream", "consumers")
STORAGE = REPO / "scanstream" / "storage"
LUA = STORAGE / "lua"


def modules() -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((REPO / package).rglob("*.py"))


def imports_redis(path: Path) -> list[int]:
    """The lines of `path` that import redis (or a submodule of it), wherever they are."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        else:
            continue
        if any(name == "redis" or name.startswith("redis.") for name in names):
            lines.append(node.lineno)
    return lines


def test_only_the_storage_package_imports_redis() -> None:
    """Given every module of scanstream/ and consumers/, then only those under
    scanstream/storage import redis: everything else calls storage's Python API."""
    found = {
        str(path.relative_to(REPO)): lines
        for path in modules()
        if STORAGE not in path.parents and (lines := imports_redis(path))
    }
    assert found == {}
    assert any(imports_redis(path) for path in STORAGE.glob("*.py"))  # the check can see


def test_every_lua_script_is_in_the_storage_package() -> None:
    """Given the whole repository, then no .lua file exists outside scanstream/storage/lua."""
    strays = []
    for folder, dirs, files in os.walk(REPO):
        # not ours: git's and tools' folders, virtual environments
        dirs[:] = [
            d
            for d in dirs
            if not d.startswith(".") and not (Path(folder, d) / "pyvenv.cfg").exists()
        ]
        strays += [
            str(Path(folder, f).relative_to(REPO))
            for f in files
            if f.endswith(".lua") and Path(folder) != LUA
        ]
    assert strays == []
    assert sorted(LUA.glob("*.lua"))  # the scripts are where they belong


def test_the_storage_package_names_every_module_it_has() -> None:
    """Given the storage package's docstring (its map), then it names each of its modules."""
    doc = scanstream.storage.__doc__ or ""
    missing = [p.name for p in sorted(STORAGE.glob("*.py")) if p.name != "__init__.py"]
    assert [name for name in missing if name not in doc] == []
