"""The package's one-way layers (docs/architecture.md) and its function-level imports.

import-linter reads the layers contract in setup.cfg. It finds a package's modules by walking the
package's folder, but the source tree maps trainers/, pretraining/ and evaluation/ into
``nnunet_genesis`` only at installation (setup.cfg's package_dir), so the contract is checked on
a copy laid out as installed.
"""

from __future__ import annotations

import ast
import configparser
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SETUP_CFG = ROOT / "setup.cfg"


def package_dirs() -> dict[str, Path]:
    """setup.cfg's package_dir: import name -> source folder."""
    cfg = configparser.ConfigParser()
    cfg.read(SETUP_CFG)
    pairs = (line.split("=") for line in cfg["options"]["package_dir"].strip().splitlines())
    return {name.strip(): ROOT / folder.strip() for name, folder in pairs}


def installed_layout(target: Path) -> Path:
    for name, folder in package_dirs().items():
        shutil.copytree(folder, target / name.replace(".", "/"), dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return target


def lint_imports(tree: Path) -> subprocess.CompletedProcess:
    lint = Path(sys.executable).parent / "lint-imports"
    if not lint.is_file():
        pytest.fail(f"{lint} is missing: install the test extra (pip install -e '.[test]'), which brings import-linter")
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run([str(lint), str(SETUP_CFG), "--no-cache"], cwd=tree, env=env, capture_output=True,
                          text=True, timeout=300)


def test_the_layers_contract_holds(tmp_path):
    result = lint_imports(installed_layout(tmp_path / "site"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 kept, 0 broken" in result.stdout


def test_an_upward_import_from_the_core_breaks_the_contract(tmp_path):
    """The check can fail: the core's error module importing the workflows is reported."""
    tree = installed_layout(tmp_path / "site")
    errors = tree / "nnunet_genesis" / "errors.py"
    errors.write_text(errors.read_text(encoding="utf-8") + "\nimport nnunet_genesis.workflows.pipeline  # noqa\n")
    result = lint_imports(tree)
    assert result.returncode != 0
    assert "nnunet_genesis.errors -> nnunet_genesis.workflows.pipeline" in result.stdout


def has_reason(lines: list[str], lineno: int) -> bool:
    """Whether a ``# lazy:`` comment stands on the import's line or above its block of imports."""
    i = lineno - 1
    while i >= 0 and (lines[i].lstrip().startswith(("from ", "import ")) or i == lineno - 1):
        if "# lazy:" in lines[i]:
            return True
        i -= 1
    return i >= 0 and lines[i].lstrip().startswith("# lazy:")


def function_level_project_imports(path: Path) -> list[str]:
    """``file:line`` of each import of a project module inside a function without a ``# lazy:`` reason."""
    source = path.read_text(encoding="utf-8")
    lines = source.splitlines()
    found = []

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if in_function and isinstance(child, (ast.Import, ast.ImportFrom)):
                names = [child.module or ""] if isinstance(child, ast.ImportFrom) else [a.name for a in child.names]
                if any(n.startswith("nnunet_genesis") for n in names) and not has_reason(lines, child.lineno):
                    found.append(f"{path.relative_to(ROOT)}:{child.lineno}")
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)))

    visit(ast.parse(source), False)
    return found


def test_project_modules_are_imported_at_module_level():
    """A function-level import hides a layer violation from a reader; where laziness is the point
    the line says why (``# lazy: ...``)."""
    files = sorted({p for folder in package_dirs().values() for p in folder.rglob("*.py")})
    assert len(files) > 50
    hidden = [hit for path in files for hit in function_level_project_imports(path)]
    assert hidden == []
