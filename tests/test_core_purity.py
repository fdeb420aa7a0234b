"""lottery.core imports torch and the standard library only: no Lightning, Hydra, OmegaConf or W&B."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import lottery.core

CORE_MODULES = ["duration", "masks", "pruning", "hashing", "lr_schedule", "artifacts"]
FORBIDDEN = ("lightning", "pytorch_lightning", "hydra", "omegaconf", "wandb")
CORE_DIR = Path(lottery.core.__file__).parent
CORE_FILES = sorted(CORE_DIR.glob("*.py"))


def _modules_on_disk():
    return sorted(p.stem for p in CORE_FILES if p.stem != "__init__")


def test_core_modules_exist():
    assert set(CORE_MODULES) <= set(_modules_on_disk())


def test_importing_core_loads_no_training_stack():
    modules = sorted(set(CORE_MODULES) | set(_modules_on_disk()))
    imports = "; ".join(f"import lottery.core.{m}" for m in modules)
    code = (
        f"import sys; {imports}; "
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}); "
        "assert 'lottery.core.pruning' in sys.modules and 'torch' in sys.modules; "
        "print('FORBIDDEN:', bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip() == "FORBIDDEN: []"


def _imported_roots(source: str) -> set[str]:
    """Top-level packages imported by `source`: import statements anywhere, and import_module/__import__ calls."""
    roots = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            if name in ("import_module", "__import__") and isinstance(node.args[0].value, str):
                roots.add(node.args[0].value.split(".")[0])
    return roots


def test_scanner_sees_imports():
    source = (
        "import os\nimport lightning.pytorch as pl\nfrom hydra.utils import instantiate\n"
        "def f():\n    import wandb\n    importlib.import_module('omegaconf.dictconfig')\n"
        "    __import__('pytorch_lightning')\n"
        "from . import masks\n"
    )
    assert _imported_roots(source) == {"os", "lightning", "hydra", "wandb", "omegaconf", "pytorch_lightning"}


def test_core_sources_do_not_import_training_stack():
    offenders = {}
    for path in CORE_FILES:
        bad = _imported_roots(path.read_text()) & set(FORBIDDEN)
        if bad:
            offenders[path.name] = sorted(bad)
    assert offenders == {}


def test_core_imports_only_torch_stdlib_and_itself():
    allowed = set(sys.stdlib_module_names) | {"torch", "lottery", "__future__"}
    extra = {}
    for path in CORE_FILES:
        outside = _imported_roots(path.read_text()) - allowed
        if outside:
            extra[path.name] = sorted(outside)
    assert extra == {}
