"""The layout shows the design: only ray_jobs/runtime/ imports Ray (train/loop.py may use Ray Train's worker API,
the one named exception), no module of the package imports itself into a cycle with config.py, and every Arrow
group_by is single-threaded."""

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


def test_every_arrow_group_by_is_single_threaded():
    """pyarrow 26's threaded group_by (Acero) raised "thread index 10 is out of range [0, 10)" inside a Ray task
    (the 4.4 GB run's report); single-threaded it is also deterministic in its output order. So every
    `.group_by(...)` of the package passes use_threads=False, new ones included."""
    offenders = []
    for f in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "group_by":
                single = any(k.arg == "use_threads" and isinstance(k.value, ast.Constant) and k.value.value is False
                             for k in node.keywords)
                if not single:
                    offenders.append(f"{f.relative_to(PACKAGE)}:{node.lineno}")
    assert not offenders, f"group_by without use_threads=False (see this test's docstring): {offenders}"


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
