"""The deployment files under cluster/ against what Ray, KubeRay and this project accept, through
cluster/check_manifests.py (offline: no Ray started, nothing fetched). Every rule is also fed a broken copy of a
real file and must reject it with a message that names the problem."""

from __future__ import annotations

import copy
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import ray
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = ROOT / "cluster"


def _load_checker():
    spec = importlib.util.spec_from_file_location("check_manifests", CLUSTER / "check_manifests.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


cm = _load_checker()
PINNED = cm.pinned_ray_minor()


def _docs(name: str) -> list[dict]:
    return cm.load_yaml(CLUSTER / name)


# --------------------------------------------------------------------------------------- the real files pass


def test_every_file_under_cluster_is_checked_and_passes():
    results = cm.check_all()
    expected = {"cluster/aws.yaml", "cluster/kuberay/raycluster.yaml", "cluster/kuberay/rayjob.yaml",
                "cluster/kuberay/storage.yaml", "cluster/docker/Dockerfile"}
    assert expected <= set(results), f"not checked: {expected - set(results)}"
    yamls = {str(p.relative_to(ROOT)) for p in [*CLUSTER.rglob("*.yaml"), *CLUSTER.rglob("*.yml")]}
    assert yamls <= set(results), f"YAML files the checker skipped: {yamls - set(results)}"
    assert {name: p for name, p in results.items() if p} == {}


def test_pinned_ray_minor_is_the_installed_one(tmp_path):
    assert PINNED == tuple(int(x) for x in ray.__version__.split(".")[:2])
    loose = tmp_path / "pyproject.toml"
    loose.write_text('[project]\ndependencies = ["ray[data]>=2.60"]\n')
    with pytest.raises(ValueError, match="no dependency of the form"):
        cm.pinned_ray_minor(loose)
    wide = tmp_path / "wide.toml"
    wide.write_text('[project]\ndependencies = ["ray[data]>=2.60,<2.62"]\n')
    with pytest.raises(ValueError, match="pinned to one minor"):
        cm.pinned_ray_minor(wide)


@pytest.mark.parametrize("text, value", [("500m", 0.5), ("32Gi", 32 * 2**30), ("8", 8), (8, 8), ("1e3", 1000),
                                         ("1.5k", 1500), (".5", 0.5)])
def test_quantity_parses(text, value):
    assert cm.parse_quantity(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["32 GB", "32GB", "1.2.3", "Gi", "", "8 "])
def test_quantity_rejects(text):
    with pytest.raises(ValueError, match="not a Kubernetes quantity"):
        cm.parse_quantity(text)


@pytest.mark.parametrize("value", [True, None, ["8"]])
def test_quantity_rejects_other_types(value):
    with pytest.raises(TypeError, match="not a Kubernetes quantity"):
        cm.parse_quantity(value)


# --------------------------------------------------------------------------------------- Ray autoscaler YAML

AWS_TEXT = (CLUSTER / "aws.yaml").read_text()
AWS = yaml.safe_load(AWS_TEXT)
WORKER = "ray.worker.cpu"


def _aws(mutate: Callable[[dict], None], text: str = AWS_TEXT) -> list[str]:
    cfg = copy.deepcopy(AWS)
    mutate(cfg)
    return cm.check_autoscaler(cfg, text, PINNED)


def _pop_install(c: dict) -> None:
    c["setup_commands"] = [s for s in c["setup_commands"] if "ray_jobs" not in s]


def _torch_after_project(c: dict) -> None:
    torch = next(s for s in c["setup_commands"] if "torch" in s)
    c["setup_commands"] = [s for s in c["setup_commands"] if s != torch] + [torch]


AUTOSCALER_BROKEN = {
    "unknown top-level key (Ray's schema)": (lambda c: c.update(max_worker=3), "Additional properties"),
    "string CPU count (Ray's schema)": (lambda c: c["available_node_types"][WORKER]["resources"].update(CPU="8"),
                                        "'8' is not of type 'integer'"),
    "unknown provider (Ray's prepare_config)": (lambda c: c["provider"].update(type="aws2"),
                                                "Unsupported node provider"),
    "head type that does not exist (Ray's validate_config)": (lambda c: c.update(head_node_type="ray.head.gone"),
                                                               "must be one of `available_node_types`"),
    "min_workers above the global max (Ray's validate_config)": (
        lambda c: c["available_node_types"][WORKER].update(min_workers=9), "smaller than the sum of `min_workers`"),
    "node type max above the global max": (lambda c: c["available_node_types"][WORKER].update(max_workers=9),
                                           "min_workers <= max_workers <= the global max_workers"),
    "no CPUs at start": (lambda c: c["available_node_types"][WORKER].update(min_workers=0), "CPUs are up before"),
    "worker without a CPU count": (lambda c: c["available_node_types"][WORKER].update(resources={}),
                                   "give resources.CPU"),
    "dashboard on 0.0.0.0": (lambda c: c.update(head_start_ray_commands=[
        s.replace("127.0.0.1", "0.0.0.0") for s in c["head_start_ray_commands"]]), "--dashboard-host=127.0.0.1"),
    "image of another Ray minor": (lambda c: c["docker"].update(image="rayproject/ray:2.59.0-py311-cpu"),
                                   "carries Ray 2.59.0"),
    "project not installed": (_pop_install, "no `pip install` of the checkout"),
    "torch after the project": (_torch_after_project, "install torch from https://download.pytorch.org/whl/"),
    "token not copied": (lambda c: c["file_mounts"].pop("~/.ray/auth_token"), "token auth"),
    "shared volume not passed into the container": (lambda c: c["docker"].update(
        run_options=[o for o in c["docker"]["run_options"] if not o.startswith("-v ")]), "shared storage"),
}


@pytest.mark.parametrize("case", AUTOSCALER_BROKEN)
def test_autoscaler_rejects(case):
    mutate, message = AUTOSCALER_BROKEN[case]
    problems = _aws(mutate)
    assert any(message in p for p in problems), problems


def test_autoscaler_needs_the_ray_jobs_submit_command():
    text = AWS_TEXT.replace("-- ray-jobs run", "-- python -m ray_jobs run")
    problems = _aws(lambda c: None, text)
    assert any("ray job submit --address http://127.0.0.1:8265" in p for p in problems), problems


# --------------------------------------------------------------------------------------- KubeRay RayCluster

STORAGE = _docs("kuberay/storage.yaml")


def _raycluster(mutate: Callable[[dict, list[dict]], None]) -> list[str]:
    docs, storage = copy.deepcopy(_docs("kuberay/raycluster.yaml")), copy.deepcopy(STORAGE)
    mutate(docs[0], storage)
    return cm.check_kubernetes(docs, PINNED, storage)


def _worker(rc: dict) -> dict:
    return rc["spec"]["workerGroupSpecs"][0]


def _ray_container(group: dict) -> dict:
    return group["template"]["spec"]["containers"][0]


RAYCLUSTER_BROKEN = {
    "unknown key": (lambda rc, s: _worker(rc).update(replica=2), "unknown key 'replica'; did you mean 'replicas'?"),
    "int rayStartParams value": (lambda rc, s: rc["spec"]["headGroupSpec"]["rayStartParams"].update({"num-cpus": 0}),
                                 "expected a string, got int 0 (KubeRay's rayStartParams is map[string]string"),
    "boolean as a string": (lambda rc, s: rc["spec"].update(enableInTreeAutoscaling="true"), "expected a boolean"),
    "auth mode not in the enum": (lambda rc, s: rc["spec"]["authOptions"].update(mode="tokens"),
                                  "is not one of disabled, token"),
    "missing template": (lambda rc, s: _worker(rc).pop("template"), "missing required key 'template'"),
    "replicas above maxReplicas": (lambda rc, s: _worker(rc).update(replicas=9),
                                   "minReplicas <= replicas <= maxReplicas does not hold (1 <= 9 <= 8)"),
    "minReplicas above replicas": (lambda rc, s: _worker(rc).update(minReplicas=2),
                                   "minReplicas <= replicas <= maxReplicas"),
    "image of another Ray minor": (lambda rc, s: _ray_container(_worker(rc)).update(
        image="registry.example.com/ray-jobs:2.59.0-py311"), "carries Ray 2.59.0"),
    "image without a Ray version tag": (lambda rc, s: _ray_container(_worker(rc)).update(
        image="registry.example.com/ray-jobs:latest"), "does not start with a Ray version"),
    "rayVersion of another minor": (lambda rc, s: rc["spec"].update(rayVersion="2.59.0"), "rayVersion: '2.59.0'"),
    "malformed quantity": (lambda rc, s: _ray_container(_worker(rc))["resources"]["limits"].update(memory="32 GB"),
                           "'32 GB' is not a Kubernetes quantity"),
    "requests above limits": (lambda rc, s: _ray_container(_worker(rc))["resources"]["requests"].update(
        memory="64Gi"), "requests more memory (64Gi) than its limit (32Gi)"),
    "no cpu limit": (lambda rc, s: _ray_container(_worker(rc))["resources"]["limits"].pop("cpu"), "no cpu limit"),
    "object store too large": (lambda rc, s: _worker(rc)["rayStartParams"].update(
        {"object-store-memory": str(20 * 2**30)}), "more than 50% of the memory limit 32Gi"),
    "dashboard on a LoadBalancer": (lambda rc, s: rc["spec"]["headGroupSpec"].update(
        serviceType="LoadBalancer", rayStartParams={"dashboard-host": "0.0.0.0"}),
        "serviceType LoadBalancer publishes port 8265"),
    "dashboard on 0.0.0.0 (KubeRay's default) without token auth": (lambda rc, s: (
        rc["spec"]["headGroupSpec"]["rayStartParams"].pop("dashboard-host"), rc["spec"].pop("authOptions")),
        "without authOptions"),
    "no CPUs at start": (lambda rc, s: _worker(rc).update(minReplicas=0), "CPUs are up before the autoscaler"),
    "mount of an undefined volume": (lambda rc, s: _ray_container(_worker(rc))["volumeMounts"][0].update(
        name="scratch"), "volumeMount 'scratch' names no volume"),
    "claim defined nowhere": (lambda rc, s: s.clear(), "is defined in no manifest under cluster/"),
    "claim that is not ReadWriteMany": (lambda rc, s: s[0]["spec"].update(accessModes=["ReadWriteOnce"]),
                                        "is not ReadWriteMany"),
    "shared volume at another path on the workers": (lambda rc, s: _ray_container(_worker(rc))["volumeMounts"][0]
                                                     .update(mountPath="/data"), "at the same path in the head and"),
    "volume with two sources": (lambda rc, s: _worker(rc)["template"]["spec"]["volumes"][0].update(emptyDir={}),
                                "a volume needs exactly one source; found ['persistentVolumeClaim', 'emptyDir']"),
    "no container": (lambda rc, s: _worker(rc)["template"]["spec"].update(containers=[]),
                     "empty; KubeRay runs Ray in containers[0]"),
    "num-cpus that ray start cannot parse": (lambda rc, s: rc["spec"]["headGroupSpec"]["rayStartParams"].update(
        {"num-cpus": "zero"}), "'zero' is not what `ray start --num-cpus` takes (a number)"),
    "object store as a quantity": (lambda rc, s: _worker(rc)["rayStartParams"].update(
        {"object-store-memory": "8Gi"}), "is not what `ray start --object-store-memory` takes (a number of bytes)"),
    "two worker groups with one name": (lambda rc, s: rc["spec"]["workerGroupSpecs"].append(
        copy.deepcopy(_worker(rc))), "groupName 'cpu' is used twice"),
    "token auth on a Ray without it": (lambda rc, s: rc["spec"].update(rayVersion="2.51.0"),
                                       "token authentication needs rayVersion >= 2.52.0"),
}


@pytest.mark.parametrize("case", RAYCLUSTER_BROKEN)
def test_raycluster_rejects(case):
    mutate, message = RAYCLUSTER_BROKEN[case]
    problems = _raycluster(mutate)
    assert any(message in p for p in problems), problems


def test_unknown_kind_is_not_waved_through():
    problems = cm.check_kubernetes([{"apiVersion": "ray.io/v1", "kind": "RayService", "metadata": {"name": "x"}}],
                                   PINNED)
    assert any("no field set for apiVersion 'ray.io/v1' kind 'RayService'" in p for p in problems), problems


# --------------------------------------------------------------------------------------- KubeRay RayJob


def _rayjob(mutate: Callable[[dict, dict], None]) -> list[str]:
    docs = copy.deepcopy(_docs("kuberay/rayjob.yaml"))
    config_map, job = (next(d for d in docs if d["kind"] == k) for k in ("ConfigMap", "RayJob"))
    mutate(job, config_map)
    return cm.check_kubernetes(docs, PINNED, copy.deepcopy(STORAGE))


def _config(cm_doc: dict, old: str, new: str) -> None:
    assert old in cm_doc["data"]["config.toml"]
    cm_doc["data"]["config.toml"] = cm_doc["data"]["config.toml"].replace(old, new)


def _head(job: dict) -> dict:
    return job["spec"]["rayClusterSpec"]["headGroupSpec"]


RAYJOB_BROKEN = {
    "unknown key": (lambda j, c: j["spec"].update(shutdownAfterJobFinish=True),
                    "unknown key 'shutdownAfterJobFinish'; did you mean 'shutdownAfterJobFinishes'?"),
    "submission mode not in the enum": (lambda j, c: j["spec"].update(submissionMode="K8sJob"),
                                        "is not one of K8sJobMode, HTTPMode, InteractiveMode, SidecarMode"),
    "int rayStartParams value": (lambda j, c: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["rayStartParams"]
                                 .update({"object-store-memory": 8589934592}), "expected a string, got int"),
    "replicas above maxReplicas": (lambda j, c: j["spec"]["rayClusterSpec"]["workerGroupSpecs"][0].update(
        replicas=20), "minReplicas <= replicas <= maxReplicas"),
    "image of another Ray minor": (lambda j, c: _ray_container(_head(j)).update(
        image="rayproject/ray:2.61.0-py311-cpu"), "carries Ray 2.61.0"),
    "ttl without shutdown": (lambda j, c: j["spec"].update(shutdownAfterJobFinishes=False),
                             "applies it only with shutdownAfterJobFinishes: true"),
    "cluster and selector": (lambda j, c: j["spec"].update(clusterSelector={"ray.io/cluster": "ray-jobs"}),
                             "exactly one of rayClusterSpec"),
    "entrypoint that is not ray-jobs": (lambda j, c: j["spec"].update(
        entrypoint="python -m ray_jobs run /etc/ray-jobs/config.toml"), "is not `ray-jobs run CONFIG`"),
    "config not mounted": (lambda j, c: j["spec"].update(entrypoint="ray-jobs run /etc/other/config.toml"),
                           "is not a key of a ConfigMap"),
    "config key missing from the ConfigMap": (lambda j, c: c["data"].update({"run.toml": c["data"].pop(
        "config.toml")}), "is not a key of a ConfigMap"),
    "config the project rejects": (lambda j, c: _config(c, "[ray]", "[ray]\nnum_cpu = 2"),
                                   "ray-jobs rejects the config: unknown key(s) num_cpu in [ray]"),
    "output.dir off the shared volume": (lambda j, c: _config(c, '"/mnt/shared/runs/sample"', '"/tmp/run"'),
                                         "output.dir '/tmp/run' is not on the shared volume (/mnt/shared)"),
    "relative input path": (lambda j, c: _config(c, '"/home/ray/ray_jobs/shards/sample/parquet"',
                                                 '"shards/sample/parquet"'), "is relative"),
    "dashboard on a NodePort": (lambda j, c: _head(j).update(serviceType="NodePort"),
                                "serviceType NodePort publishes port 8265"),
    "dashboard on 0.0.0.0 without token auth": (lambda j, c: j["spec"]["rayClusterSpec"].pop("authOptions"),
                                                "without authOptions"),
}


@pytest.mark.parametrize("case", RAYJOB_BROKEN)
def test_rayjob_rejects(case):
    mutate, message = RAYJOB_BROKEN[case]
    problems = _rayjob(mutate)
    assert any(message in p for p in problems), problems


# --------------------------------------------------------------------------------------- Dockerfile

DOCKERFILE = (CLUSTER / "docker" / "Dockerfile").read_text()


@pytest.mark.parametrize("old, new, message", [
    ("rayproject/ray:2.60.0-py311", "rayproject/ray:2.59.0-py311", "carries Ray 2.59.0"),
    ("rayproject/ray:2.60.0-py311-${RAY_FLAVOUR}", "python:3.11-slim", "build on the official rayproject/ray"),
    ("tesseract-ocr tesseract-ocr-eng", "poppler-utils", "tesseract-ocr is not installed"),
    ("https://download.pytorch.org/whl/cpu", "https://pypi.org/simple", "install torch from"),
])
def test_dockerfile_rejects(old, new, message):
    assert old in DOCKERFILE
    problems = cm.check_dockerfile(DOCKERFILE.replace(old, new), PINNED)
    assert any(message in p for p in problems), problems
