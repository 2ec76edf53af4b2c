"""`triton_models` takes paths: it never imports the local stack or the tooling (the stack builds
models with it, so the reverse would be an import circle)."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from streaming.stack.layout import DIR_ENV, StackLayout
from triton_models import build

REPO = Path(__file__).resolve().parents[2]
FORBIDDEN = ("streaming.stack", "streaming.cli", "streaming.ops", "streaming.bench")
MODULES = sorted((REPO / "triton_models").rglob("*.py"))


def _imports(path: Path) -> set[str]:
    """Every module an import statement names, at any depth (function-local imports too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(REPO)))
def test_no_triton_models_module_imports_the_stack_or_the_tooling(path):
    bad = sorted(name for name in _imports(path)
                 if any(name == f or name.startswith(f + ".") for f in FORBIDDEN))
    assert not bad, f"{path.relative_to(REPO)} imports {bad}: pass paths in instead"


def test_importing_the_builders_loads_no_tooling_module():
    code = ("import sys; import triton_models.build, triton_models.eval_report, triton_models.evaluate, "
            "triton_models.loadgen, triton_models.photos, triton_models.classify, triton_models.make_labels; "
            f"print(sorted(m for m in sys.modules if m.startswith({FORBIDDEN!r})))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize("environ", [{}, {DIR_ENV: "/tmp/imgstream-elsewhere"}])
def test_the_builders_command_line_works_in_the_stacks_folder(environ):
    """`python -m triton_models.build` (the Kubernetes init container) caches where the stack would."""
    assert build.WORK_DIR_ENV == DIR_ENV
    assert build.default_work_dir(environ) == StackLayout.from_env(environ).root
