"""Which layer may import what. Dependencies run one way:

    pages/, streamlit_app.py  ->  medal_ui (Streamlit glue)  ->  medal_views  ->  medal_core

and inside the core, floor by floor (a module imports from its own floor or below):

    data, evaluation, modeling  ->  screening  ->  bundles  ->  serving, explain  ->  stages

The ML core imports no UI or view module, nor Streamlit or Plotly; the views import no
Streamlit and nothing of the app above them; the result, its wording and the decision
policy load without TensorFlow (each checked in a fresh interpreter)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CORE = sorted((ROOT / "medal_core").rglob("*.py"))
VIEWS = sorted((ROOT / "medal_views").glob("*.py"))
UI_LIBRARIES = {"streamlit", "medal_ui", "pages"}
VIEW_LIBRARIES = {"medal_views", "plotly"}


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module `path` imports (at any depth of the file)."""
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("path", CORE, ids=[str(p.relative_to(ROOT)) for p in CORE])
def test_the_core_imports_no_ui_and_no_view(path):
    assert not imported_modules(path) & (UI_LIBRARIES | VIEW_LIBRARIES)


@pytest.mark.parametrize("path", VIEWS, ids=[p.name for p in VIEWS])
def test_the_views_import_no_streamlit_and_nothing_above_them(path):
    assert not imported_modules(path) & UI_LIBRARIES


@pytest.mark.parametrize(
    "module", ["medal_core.evaluation.decision", "medal_core.serving.prediction", "medal_views.results"]
)
def test_results_and_the_decision_policy_need_no_tensorflow(module):
    code = (
        f"import sys, {module}; "
        "heavy = [m for m in ('tensorflow', 'keras') if m in sys.modules]; "
        "print(heavy); sys.exit(1 if heavy else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{module} pulls in {done.stdout.strip()}"
