"""A real multi-node Ray cluster on one machine: a head and N worker nodes, each a `ray start` on 127.0.0.1 with its
own CPU count and object-store limit; stopped cleanly, node by node if need be.

    python cluster/local_cluster.py start --workers 2 --cpus 1 --object-store-mb 512
    export RAY_ADDRESS=127.0.0.1:<port>          # printed by start; `ray-jobs run` then joins this cluster
    ray-jobs submit cluster/configs/sample.toml --address http://127.0.0.1:<dashboard port>
    python cluster/local_cluster.py status
    python cluster/local_cluster.py kill-node worker-1     # fault injection: SIGKILL that node's raylet + workers
    python cluster/local_cluster.py add-node --cpus 1      # a replacement, as an autoscaler would start
    python cluster/local_cluster.py stop

Why this instead of `ray start` by hand: several nodes on one host need distinct ports for everything each node
opens (node manager, object manager, dashboard agent, runtime-env agent, metrics); this picks free ones. Each node
carries a custom resource `node:<name>` so its processes can be found (its raylet's command line lists it) and
killed alone; `ray stop` would stop every Ray on the machine, including other sessions'. The head has 0 CPUs by
default, like a cluster head that only schedules, so work runs on the worker nodes. Everything binds to 127.0.0.1,
the dashboard and job API included, and the cluster uses Ray's token authentication (a fresh token per cluster,
in a 0600 file next to the state file; `start` prints the environment a client needs).

The cluster's state (ports, node names) is kept in a JSON file (--state, default
$TMPDIR/ray_jobs_local_cluster.json), so start, status, kill-node and stop can be separate commands.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil

HOST = "127.0.0.1"
DEFAULT_STATE = Path(tempfile.gettempdir()) / "ray_jobs_local_cluster.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _ray() -> str:
    """The `ray` executable next to this Python (the project's venv), else the one on PATH."""
    here = Path(sys.executable).with_name("ray")
    return str(here) if here.exists() else "ray"


def _node_args(name: str, cpus: int, object_store_mb: int) -> list[str]:
    ports = {p: free_port() for p in ("--node-manager-port", "--object-manager-port", "--dashboard-agent-listen-port",
                                      "--dashboard-agent-grpc-port", "--runtime-env-agent-port",
                                      "--metrics-export-port")}
    args = [f"--node-ip-address={HOST}", f"--num-cpus={cpus}", f"--resources={json.dumps({f'node:{name}': 1})}",
            "--disable-usage-stats"]
    if object_store_mb:
        args.append(f"--object-store-memory={object_store_mb * 2**20}")
    return args + [f"{k}={v}" for k, v in ports.items()]


def _run(cmd: list[str], env: dict[str, str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(cmd[:3])} ...` failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")


def start(workers: int, cpus: int, object_store_mb: int, head_cpus: int = 0, state: Path = DEFAULT_STATE,
          dashboard_port: int = 0, env: dict[str, str] | None = None) -> dict:
    """Start a head and `workers` worker nodes; returns (and saves) the cluster's state."""
    if state.exists() and _alive(json.loads(state.read_text())):
        raise RuntimeError(f"a local cluster from {state} is still running; stop it first (`stop --state {state}`)")
    token = state.with_suffix(".token")  # Ray's token authentication (2.52+): every node and client needs it
    state.parent.mkdir(parents=True, exist_ok=True)
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    env = {**os.environ, **(env or {}), **auth_env(token)}
    port, dash, client = free_port(), dashboard_port or free_port(), free_port()
    _run([_ray(), "start", "--head", f"--port={port}", "--include-dashboard=true", f"--dashboard-host={HOST}",
          f"--dashboard-port={dash}", f"--ray-client-server-port={client}",
          *_node_args("head", head_cpus, object_store_mb)], env)
    info = {"gcs": f"{HOST}:{port}", "dashboard": f"http://{HOST}:{dash}", "nodes": ["head"],
            "object_store_mb": object_store_mb, "token_file": str(token)}
    state.write_text(json.dumps(info, indent=2) + "\n")
    for _ in range(workers):
        add_node(cpus, object_store_mb, state, env)
    return json.loads(state.read_text())


def auth_env(token_file: str | Path) -> dict[str, str]:
    """What a node or a client (`ray-jobs run` with RAY_ADDRESS, `ray job submit`, `ray-jobs submit`) needs in its
    environment to talk to this cluster."""
    return {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}


def add_node(cpus: int, object_store_mb: int, state: Path = DEFAULT_STATE, env: dict[str, str] | None = None) -> str:
    info = json.loads(state.read_text())
    env = {**(env or {}), **auth_env(info["token_file"])}
    name = f"worker-{sum(n.startswith('worker-') for n in info['nodes']) + 1}"
    _run([_ray(), "start", f"--address={info['gcs']}", *_node_args(name, cpus, object_store_mb)],
         {**os.environ, **(env or {})})
    info["nodes"].append(name)
    state.write_text(json.dumps(info, indent=2) + "\n")
    return name


def _gcs_port(info: dict) -> str:
    return info["gcs"].rsplit(":", 1)[1]


def _processes(info: dict, node: str | None = None) -> list[psutil.Process]:
    """This cluster's processes (all, or one node's raylet and what it started). A process belongs to the cluster
    when its command line names the GCS port (Ray writes the node's own address there, which need not be
    127.0.0.1); a node's raylet is the one whose resource list names the node."""
    owns = re.compile(rf"(--gcs[-_]address=\S+:{_gcs_port(info)}|--gcs_server_port={_gcs_port(info)})(\s|$)")
    mine = [p for p in psutil.process_iter(["cmdline"]) if owns.search(" ".join(p.info["cmdline"] or []))]
    if node is None:
        return mine
    raylets = [p for p in mine if p.info["cmdline"][0].endswith("/raylet") and
               f"node:{node},1" in " ".join(p.info["cmdline"])]
    out = []
    for r in raylets:
        out += [r, *r.children(recursive=True)]
    return out


def _alive(info: dict) -> bool:
    return bool(_processes(info))


def kill_node(node: str, state: Path = DEFAULT_STATE) -> int:
    """SIGKILL one node's raylet and its worker processes at once, as a lost machine would vanish. Returns how many
    processes were killed."""
    info = json.loads(state.read_text())
    procs = _processes(info, node)
    if not procs:
        raise RuntimeError(f"no running raylet for node {node!r} (nodes: {info['nodes']})")
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(procs, timeout=10)
    return len(procs)


def stop(state: Path = DEFAULT_STATE, grace_s: float = 10.0) -> int:
    """SIGTERM every process of this cluster, SIGKILL what is left after `grace_s`; removes the state file."""
    if not state.exists():
        return 0
    info = json.loads(state.read_text())
    procs = _processes(info)
    for p in procs:
        try:
            p.terminate()
        except psutil.NoSuchProcess:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for p in alive:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(alive, timeout=5)
    state.unlink(missing_ok=True)
    Path(info["token_file"]).unlink(missing_ok=True)
    # `ray start --head` left its address here for a bare ray.init() to join; it must not outlive the cluster
    current = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    if current.is_file() and current.read_text().strip().endswith(f":{_gcs_port(info)}"):
        current.unlink()
    return len(procs)


def status(state: Path = DEFAULT_STATE) -> dict:
    info = json.loads(state.read_text())
    return {**info, "processes": len(_processes(info)),
            "nodes_up": [n for n in info["nodes"] if _processes(info, n)]}


def wait_for_nodes(count: int, address: str, token_file: str, timeout_s: float = 60) -> None:
    """Block until `count` nodes are alive in the cluster's GCS (`ray start` returns before a node registers)."""
    code = ("import ray, sys; ray.init(address=sys.argv[1], log_to_driver=False); "
            "print(sum(n['Alive'] for n in ray.nodes())); ray.shutdown()")
    deadline = time.time() + timeout_s
    seen = -1
    while time.time() < deadline:
        out = subprocess.run([sys.executable, "-c", code, address], capture_output=True, text=True,
                             env={**os.environ, **auth_env(token_file)})
        seen = int(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 and out.stdout.strip() else -1
        if seen == count:
            return
        time.sleep(1)
    raise TimeoutError(f"{count} nodes expected in the cluster at {address}, {seen} alive after {timeout_s:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--state", type=Path, default=DEFAULT_STATE)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("start")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--cpus", type=int, default=1, help="CPUs per worker node")
    p.add_argument("--head-cpus", type=int, default=0)
    p.add_argument("--object-store-mb", type=int, default=512, help="per node; 0 = Ray's default (30 %% of RAM)")
    p.add_argument("--dashboard-port", type=int, default=8265)
    p = sub.add_parser("add-node")
    p.add_argument("--cpus", type=int, default=1)
    p.add_argument("--object-store-mb", type=int, default=512)
    p = sub.add_parser("kill-node")
    p.add_argument("node")
    sub.add_parser("status")
    sub.add_parser("stop")
    args = ap.parse_args()
    if args.cmd == "start":
        info = start(args.workers, args.cpus, args.object_store_mb, args.head_cpus, args.state, args.dashboard_port)
        wait_for_nodes(len(info["nodes"]), info["gcs"], info["token_file"])
        exports = {"RAY_ADDRESS": info["gcs"], **auth_env(info["token_file"])}
        print("\n".join(f"export {k}={v}" for k, v in exports.items()))
        print(f"# dashboard and job API: {info['dashboard']}\n# nodes: {', '.join(info['nodes'])}")
    elif args.cmd == "add-node":
        print(add_node(args.cpus, args.object_store_mb, args.state))
    elif args.cmd == "kill-node":
        print(f"killed {kill_node(args.node, args.state)} processes of {args.node}")
    elif args.cmd == "status":
        print(json.dumps(status(args.state), indent=2))
    else:
        print(f"stopped {stop(args.state)} processes")


if __name__ == "__main__":
    main()
