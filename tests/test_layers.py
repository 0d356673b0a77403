"""The build's layering: the contract module imports nothing of ours, sources and backends never import each other.

Read from the source files (every import statement, the lazy ones inside functions too),
so a new cross-import fails here whether or not a test happens to run it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "afpbench"


def _imports(path: Path) -> set[str]:
    """Every afpbench module a file imports, anywhere in it (``from M import x`` counts M, and M.x for a package M)."""
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
            if (PACKAGE.parent / node.module.replace(".", "/")).is_dir():
                out |= {f"{node.module}.{a.name}" for a in node.names if (PACKAGE.parent / node.module.replace(".", "/") / f"{a.name}.py").exists()}
    return {m for m in out if m.split(".")[0] == "afpbench"}


def _files(package: str) -> list[Path]:
    return sorted((PACKAGE / package).glob("*.py"))


# What a backend file may import from afpbench.generate: its base, the _-helpers and the
# helpers that are not backends (masks: shared by diffusion and network; classifier: the
# attacks backend's target model).
GENERATE_SHARED = {"afpbench.generate.base", "afpbench.generate._tensors", "afpbench.generate._usernet", "afpbench.generate.masks", "afpbench.generate.classifier"}


@pytest.mark.parametrize("path", _files("sources"), ids=lambda p: p.name)
def test_sources_never_import_the_backends(path):
    assert not {m for m in _imports(path) if m.startswith("afpbench.generate")}


@pytest.mark.parametrize("path", [p for p in _files("generate") if p.stem != "__init__"], ids=lambda p: p.name)
def test_backends_import_only_their_base_helpers_and_shared_modules(path):
    mods = _imports(path)
    assert not {m for m in mods if m.startswith("afpbench.sources")}
    assert not {m for m in mods if m.startswith("afpbench.generate")} - GENERATE_SHARED


def test_the_contract_module_imports_nothing_of_ours():
    code = "import sys, afpbench.plan; print(sorted(m for m in sys.modules if m.startswith('afpbench')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "['afpbench', 'afpbench.errors', 'afpbench.plan']"
    # Beyond the error type: the recipe type for annotations and, lazily, the one did-you-mean message.
    assert _imports(PACKAGE / "plan.py") <= {"afpbench.errors", "afpbench.catalog", "afpbench.registry"}
