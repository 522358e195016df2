"""The layout shows the design: only ray_jobs/runtime/ imports Ray (train/loop.py may use Ray Train's worker API,
the one named exception), and no module of the package imports itself into a cycle with config.py."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ray_jobs"
ALLOWED = {"train/loop.py"}  # ray.train.get_context / report / get_dataset_shard inside the worker loop


def _ray_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        found += [n for n in names if n == "ray" or n.startswith("ray.")]
    return found


def test_only_the_runtime_package_imports_ray():
    offenders = {}
    for f in sorted(PACKAGE.rglob("*.py")):
        rel = f.relative_to(PACKAGE).as_posix()
        if rel.startswith("runtime/") or rel in ALLOWED:
            continue
        if found := _ray_imports(f):
            offenders[rel] = found
    assert not offenders, f"only ray_jobs/runtime/ may import Ray: {offenders}"


def test_step_configs_import_without_the_config_loader():
    """steps/<name>/config.py import nothing that imports config.py back (the old config <-> dedup cycle), and
    importing the config loader does not import Ray."""
    steps = sorted(p.parent.name for p in (PACKAGE / "steps").glob("*/config.py"))
    code = "import sys\n" + "".join(
        f"import ray_jobs.steps.{s}.config\nassert 'ray_jobs.config' not in sys.modules, {s!r}\n" for s in steps)
    code += "import ray_jobs.config\nassert 'ray' not in sys.modules, 'config imports Ray'\n"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=PACKAGE.parent)


def test_the_lint_passes():
    """ruff (pyproject.toml [tool.ruff]) over everything Python in the repository."""
    ruff = Path(sys.executable).with_name("ruff")
    if not ruff.exists():
        import pytest

        pytest.skip(f"ruff is not installed next to {sys.executable}: `pip install -e .[dev]` installs it")
    root = PACKAGE.parent
    done = subprocess.run([str(ruff), "check", "--output-format", "concise", "ray_jobs", "tests", "benchmarks",
                           "cluster", "shards"], cwd=root, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
