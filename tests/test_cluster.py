"""A real multi-node Ray cluster on this machine (cluster/local_cluster.py: a head and three worker nodes, each its
own `ray start`): job submission both ways, a worker node killed mid-stage, the driver killed mid-run.

The driver of every run here is a separate process (`ray-jobs run` or a submitted job), never this pytest
process, which may hold a local Ray of its own (the `ray_local` fixture)."""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow.compute as pc
import pyarrow.dataset as pads
import pytest
from conftest import REPO

from ray_jobs import schema

pytestmark = pytest.mark.slow

_spec = importlib.util.spec_from_file_location("local_cluster", REPO / "cluster" / "local_cluster.py")
local_cluster = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(local_cluster)

BIN = Path(sys.executable).parent
# the runs below: the sample through clean, dedup and split (tokenize and pack add nothing to what is tested)
RUN_SETTINGS = ["--set", "leakage.enabled=false", "--set", "pack.enabled=false", "--set", "ray.progress_bars=false"]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    state = tmp_path_factory.mktemp("cluster") / "state.json"
    env = {"PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}"}  # the job driver finds `ray-jobs` of this venv
    # 2 CPUs per worker node (logical; the machine has 2 cores): a node must hold an actor (0.5) and a read
    # task (1), see engine._check_actor_cpus
    info = local_cluster.start(workers=3, cpus=2, object_store_mb=256, head_cpus=0, state=state, env=env)
    try:
        local_cluster.wait_for_nodes(4, info["gcs"], info["token_file"])
        yield {**info, "state": state}
    finally:
        local_cluster.stop(state)


def _env(cluster: dict) -> dict[str, str]:
    """A client's environment: the cluster's address and token, this venv first on PATH."""
    return {**os.environ, "RAY_ADDRESS": cluster["gcs"], "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            **local_cluster.auth_env(cluster["token_file"])}


def _split_ids(run: Path) -> dict[str, list[str]]:
    t = pads.dataset(str(run / "split"), format="parquet", partitioning="hive").to_table(columns=[schema.ID, "split"])
    return {s: sorted(pc.filter(t[schema.ID], pc.equal(t["split"], s)).to_pylist()) for s in ("train", "val", "test")}


def _run_cmd(run: Path) -> list[str]:
    return [str(BIN / "ray-jobs"), "run", "--output", str(run), *RUN_SETTINGS]


@pytest.fixture(scope="module")
def reference(cluster, tmp_path_factory):
    """An undisturbed run on the cluster, submitted through `ray-jobs submit` (logs streamed, exit status back)."""
    run = tmp_path_factory.mktemp("reference") / "run"
    out = subprocess.run([str(BIN / "ray-jobs"), "submit", "--address", cluster["dashboard"], "--output", str(run),
                          *RUN_SETTINGS], capture_output=True, text=True, env=_env(cluster), timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    return {"run": run, "stdout": out.stdout, "ids": _split_ids(run)}


def test_dashboard_and_job_api_listen_on_loopback_only(cluster):
    port = int(cluster["dashboard"].rsplit(":", 1)[1])
    listening = [c.laddr.ip for c in psutil.net_connections("tcp") if c.status == "LISTEN" and c.laddr.port == port]
    assert listening and set(listening) == {"127.0.0.1"}, listening


def test_ray_jobs_submit_streams_the_log_and_succeeds(reference):
    # the driver's own summary table came back through the job log stream
    assert "rows_in == rows_out + dropped + quarantined holds" in reference["stdout"]
    assert "job status: SUCCEEDED" in reference["stdout"]
    assert sum(len(v) for v in reference["ids"].values()) > 500


def test_ray_jobs_submit_returns_a_failed_job_status(cluster, tmp_path):
    out = subprocess.run([str(BIN / "ray-jobs"), "submit", "--address", cluster["dashboard"], "--output",
                          str(tmp_path / "run"), "--set", f'input.paths=["{tmp_path / "missing"}"]'],
                         capture_output=True, text=True, env=_env(cluster), timeout=300)
    assert out.returncode == 1
    assert "job status: FAILED" in out.stdout and "missing" in out.stdout + out.stderr


def test_plain_ray_job_submit(cluster, reference, tmp_path):
    work = tmp_path / "job"
    work.mkdir()
    run = tmp_path / "run"
    cmd = [str(BIN / "ray"), "job", "submit", "--address", cluster["dashboard"], "--working-dir", str(work), "--",
           "ray-jobs", "run", "--output", str(run), *RUN_SETTINGS]
    out = subprocess.run(cmd, capture_output=True, text=True, env=_env(cluster), timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "succeeded" in out.stdout.lower()
    assert _split_ids(run) == reference["ids"]


def _wait_for(predicate, timeout_s: float, what: str) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    raise TimeoutError(f"waited {timeout_s:.0f} s for {what}")


def test_worker_node_killed_mid_stage(cluster, reference, tmp_path):
    """A worker node dies while the clean stage runs; a replacement joins (what an autoscaler or a Kubernetes
    ReplicaSet does). The run completes and keeps exactly the undisturbed run's rows."""
    run = tmp_path / "run"
    proc = subprocess.Popen(_run_cmd(run), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(cluster))
    try:
        _wait_for(lambda: any(run.glob(".clean.tmp-*")) or any(run.glob(".dedup.tmp-*")), 180,
                  "the clean stage to start writing")
        victim = next(n for n in reversed(local_cluster.status(cluster["state"])["nodes_up"]) if n != "head")
        assert local_cluster.kill_node(victim, cluster["state"]) > 0
        local_cluster.add_node(2, 256, cluster["state"], {"PATH": _env(cluster)["PATH"]})
        log, _ = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, log[-4000:]
    assert _split_ids(run) == reference["ids"]


def test_driver_killed_mid_run_resumes(cluster, reference, tmp_path):
    """The driver is SIGKILLed after clean finished, while dedup runs; the re-run skips clean, redoes dedup and
    split, and ends with the undisturbed run's rows: none duplicated, none missing."""
    run = tmp_path / "run"
    proc = subprocess.Popen(_run_cmd(run), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env(cluster))
    try:
        _wait_for(lambda: (run / "_SUCCESS.clean").exists(), 300, "the clean stage to finish")
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not (run / "_SUCCESS.split").exists()
    clean_marker = json.loads((run / "_SUCCESS.clean").read_text())
    out = subprocess.run(_run_cmd(run), capture_output=True, text=True, env=_env(cluster), timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "clean already done" in out.stdout + out.stderr
    assert json.loads((run / "_SUCCESS.clean").read_text()) == clean_marker  # not redone
    ids = _split_ids(run)
    assert ids == reference["ids"]
    every = [i for split in ids.values() for i in split]
    assert len(every) == len(set(every))
    assert not list(run.glob(".*.tmp-*"))  # the killed run's half-written folder is gone, not taken for output
