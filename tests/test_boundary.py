"""The remote-code boundary: the modules in `mm_hub/model/` travel into every saved model folder and load there
with ``trust_remote_code`` where mm_hub is not installed, so they may import only third-party packages and each
other (same-folder relative imports). This test reads their imports and fails on any other."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

from tests.conftest import save_tiny_model

ROOT = Path(__file__).resolve().parents[1]
MODEL_DIR = ROOT / "mm_hub" / "model"
TRAVELLING = sorted(path.name for path in MODEL_DIR.glob("*.py") if path.name != "__init__.py")
# Top-level names of this repository's own code: never importable on a machine with only the model's folder.
LOCAL_PACKAGES = {"mm_hub", "training", "app", "tests", "benchmarks", "docs"}


def boundary_violations(source: str, siblings: list[str], no_torch: bool = False) -> list[str]:
    """The imports of one travelling module's ``source`` that break the rule, each as a readable line."""
    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names = [node.module or ""]
        elif isinstance(node, ast.ImportFrom):
            if node.level != 1 or not node.module:
                problems.append(f"line {node.lineno}: `from {'.' * node.level}{node.module or ''} import ...` "
                                "(only `from .<sibling module> import name`)")
            elif f"{node.module}.py" not in siblings:
                problems.append(f"line {node.lineno}: `from .{node.module}` is not a module of mm_hub/model/")
            continue
        else:
            continue
        for name in names:
            top = name.split(".")[0]
            if top in LOCAL_PACKAGES or (top not in sys.stdlib_module_names and not _installed(top)):
                problems.append(f"line {node.lineno}: `{name}` is not a third-party package")
            if no_torch and top == "torch":
                problems.append(f"line {node.lineno}: the configuration must not import torch")
    return problems


def _installed(top: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(top) is not None


@pytest.mark.parametrize("name", TRAVELLING)
def test_travelling_modules_import_only_third_party_packages_and_each_other(name):
    source = (MODEL_DIR / name).read_text()
    assert boundary_violations(source, TRAVELLING, no_torch=name.startswith("configuration")) == []


@pytest.mark.parametrize(
    "line",
    [
        "from mm_hub.predictor import Predictor",
        "import mm_hub.search",
        "from training.train import main",
        "from . import fusion_mm_hub",
        "from ..paths import cache_dir",
        "from .predictor import Predictor",
    ],
)
def test_the_check_fails_on_an_import_that_would_break_remote_loading(line):
    source = (MODEL_DIR / "modeling_mm_hub.py").read_text() + f"\n{line}\n"
    assert boundary_violations(source, TRAVELLING), line


def test_the_configuration_may_not_import_torch():
    assert boundary_violations("import torch\n", TRAVELLING, no_torch=True)


@pytest.mark.parametrize("head", ["classification", "retrieval", "generation"])
def test_a_saved_model_carries_travelling_modules_only(tmp_path, head):
    save_tiny_model(tmp_path, head)
    saved = sorted(path.name for path in tmp_path.glob("*.py"))
    assert set(saved) <= set(TRAVELLING) and "configuration_mm_hub.py" in saved
    if head == "generation":  # it imports the others: every travelling module goes with it
        assert saved == TRAVELLING
