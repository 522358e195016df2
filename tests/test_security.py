"""Security properties the cluster docs promise: nothing loads pickles, and a Ray we start serves its dashboard and
job API on 127.0.0.1 only. (Tar path traversal and oversized members: tests/test_readers.py.)"""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from conftest import REPO

# (module, function) pairs that unpickle, and the keyword that makes them safe (None: never safe)
UNPICKLERS = {("pickle", "load"): None, ("pickle", "loads"): None, ("joblib", "load"): None,
              ("pd", "read_pickle"): None, ("np", "load"): ("allow_pickle", False),
              ("torch", "load"): ("weights_only", True)}


def _unsafe_calls(source: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)):
            continue
        key = (node.func.value.id, node.func.attr)
        if key not in UNPICKLERS:
            continue
        safe = UNPICKLERS[key]
        kwargs = {k.arg: k.value for k in node.keywords}
        if safe is None or not (safe[0] in kwargs and isinstance(kwargs[safe[0]], ast.Constant)
                                and kwargs[safe[0]].value is safe[1]):
            found.append(f"line {node.lineno}: {key[0]}.{key[1]}")
    return found


def test_the_checker_sees_unpickling():
    assert _unsafe_calls("import pickle\npickle.loads(b)")
    assert _unsafe_calls("np.load(f)") and not _unsafe_calls("np.load(f, allow_pickle=False)")
    assert _unsafe_calls("torch.load(f, weights_only=False)") and not _unsafe_calls("torch.load(f, weights_only=True)")


def test_no_module_unpickles():
    bad = {str(p.relative_to(REPO)): calls for p in sorted((REPO / "ray_jobs").rglob("*.py"))
           if (calls := _unsafe_calls(p.read_text(encoding="utf-8")))}
    assert not bad, f"calls that would unpickle (input files or checkpoints could then run code): {bad}"


@pytest.mark.slow
def test_a_local_ray_of_ours_serves_its_dashboard_on_loopback_only():
    code = """
import psutil
from ray_jobs.config import RayConfig
from ray_jobs.runtime import ray_session
with ray_session(RayConfig(num_cpus=1, include_dashboard=True)):
    head = next(p for p in psutil.process_iter(["cmdline"])
                if any(a.endswith("dashboard/dashboard.py") for a in p.info["cmdline"] or []))
    port = int(next(a for a in head.info["cmdline"] if a.startswith("--port=")).split("=")[1])
    print(sorted({c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "['127.0.0.1']"
