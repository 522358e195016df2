"""Offline checks of the deployment files under cluster/ against what Ray and KubeRay accept.

    .venv/bin/python cluster/check_manifests.py      # every file under cluster/; one line per problem, exit 1

Nothing is started and nothing is fetched:
- the Ray autoscaler YAML goes through Ray's own JSON schema (ray/autoscaler/ray-schema.json in the installed wheel,
  with jsonschema) and Ray's own prepare_config + validate_config, which `ray up` runs before it calls the cloud;
- the KubeRay manifests go through the field sets below (no CRD ships in the wheel): unknown keys, wrong types,
  rayStartParams values that are not strings (KubeRay's map[string]string), malformed Kubernetes quantities;
- the Dockerfile's base image;
- and the rules of this project on top: the Ray minor pinned in pyproject.toml everywhere, the dashboard and job API
  not exposed, enough CPUs up for ray-jobs' first actor pool, one shared filesystem at one path on every node, the
  project installed (torch from PyTorch's index first) and `ray-jobs run` as the command.
"""

from __future__ import annotations

import copy
import difflib
import json
import re
import shlex
import sys
import tempfile
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

CLUSTER_DIR = Path(__file__).resolve().parent
REPO_DIR = CLUSTER_DIR.parent

# ray-jobs' engine refuses an actor pool unless the running cluster has actors x actor_cpus + 1 CPUs (Ray reserves a
# whole CPU per read task; ray_jobs/engine.py). The defaults (clean, tokenize: 2 actors x 0.5) need 2, and only
# nodes that are up count, so min_workers / minReplicas must provide them before the autoscaler adds any.
MIN_START_CPUS = 2.0
# Ray's default object store is 30 % of the memory; above half the 8 task processes of a worker (language ID,
# tokenizers, MinHash batches) have less heap than the store.
MAX_OBJECT_STORE_FRACTION = 0.5
# KubeRay's authOptions need Ray >= 2.52.0, the first Ray with token authentication (KubeRay v1.5.1 release notes).
MIN_TOKEN_AUTH_RAY = (2, 52)
DASHBOARD_PORT = 8265
# PyTorch's own wheel index (/whl/cpu, /whl/cu12x): from PyPI an unpinned torch is a multi-GB CUDA build.
TORCH_INDEX = re.compile(r"--index-url\s+[\"']?https://download\.pytorch\.org/whl/")


# --------------------------------------------------------------------------------------- the pinned Ray version


def pinned_ray_minor(pyproject: Path = REPO_DIR / "pyproject.toml") -> tuple[int, int]:
    """The Ray minor pyproject.toml pins (`ray[...]>=2.60,<2.61` -> (2, 60)); a range wider than one minor fails."""
    deps = tomllib.loads(pyproject.read_text())["project"]["dependencies"]
    for dep in deps:
        m = re.fullmatch(r"ray(\[[^\]]*\])?\s*>=\s*(\d+)\.(\d+)\s*,\s*<\s*(\d+)\.(\d+)", dep.strip())
        if m:
            lo, hi = (int(m[2]), int(m[3])), (int(m[4]), int(m[5]))
            if hi != (lo[0], lo[1] + 1):
                raise ValueError(f"{pyproject}: ray must be pinned to one minor (>=2.X,<2.X+1); found {dep!r}")
            return lo
    raise ValueError(f"{pyproject}: no dependency of the form 'ray[...]>=2.X,<2.X+1' (the pinned Ray minor)")


def _version(text: str) -> tuple[int, int] | None:
    m = re.match(r"(\d+)\.(\d+)\.\d+", text)
    return (int(m[1]), int(m[2])) if m else None


def _image_problems(where: str, image: Any, pinned: tuple[int, int]) -> list[str]:
    """An image's tag must start with the Ray version it carries (rayproject/ray:2.60.0-py311-cpu,
    .../ray-jobs:2.60.0-py311), and that version must be the pinned minor."""
    if not isinstance(image, str):
        return [f"{where}: expected an image reference string; got {image!r}"]
    name, _, tag = image.rpartition(":")
    if "/" in tag or not name:
        return [(f"{where}: image {image!r} has no tag; tag it with the Ray version it carries, e.g. "
                 f"2.{pinned[1]}.0-py311")]
    m = re.match(r"(\d+\.\d+\.\d+)-py3(\d+)", tag)
    if not m:
        return [f"{where}: image tag {tag!r} does not start with a Ray version and Python (e.g. 2.{pinned[1]}.0-py311)"]
    found = _version(m[1])
    problems = []
    if found != pinned:
        problems.append(f"{where}: image {image!r} carries Ray {m[1]}; pyproject.toml pins Ray "
                        f"{pinned[0]}.{pinned[1]} (driver and cluster must run the same Ray minor)")
    if int(m[2]) < 11:
        problems.append(f"{where}: image {image!r} has Python 3.{m[2]}; the project requires Python >= 3.11")
    return problems


# --------------------------------------------------------------------------------------- Kubernetes quantities

# The serialization format of a Kubernetes resource.Quantity (the pattern in every CRD's int-or-string quantity).
_QUANTITY = re.compile(r"^([+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+))((?:[KMGTPE]i)|[numkMGTPE]|[eE][+-]?[0-9]+)?$")
_SUFFIX = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60, "n": 1e-9, "u": 1e-6,
           "m": 1e-3, "": 1, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}


def parse_quantity(value: Any) -> float:
    """'500m' -> 0.5, '32Gi' -> 34359738368, 8 -> 8; ValueError (TypeError for a non-number, non-string) for
    anything Kubernetes would reject."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise TypeError(f"{value!r} is not a Kubernetes quantity (a string like '32Gi' or a number)")
    m = _QUANTITY.match(str(value))
    if not m:
        raise ValueError(f"{value!r} is not a Kubernetes quantity (e.g. '8', '500m', '32Gi', '1e9')")
    number, suffix = float(m[1]), m[2] or ""
    return number * (10 ** int(suffix[1:]) if suffix[:1] in ("e", "E") else _SUFFIX[suffix])


# --------------------------------------------------------------------------------------- a small field-set schema


@dataclass(frozen=True)
class Obj:
    """An object whose keys are exactly `fields` (a key -> spec mapping); `required` keys must be present."""
    name: str
    fields: dict[str, Any]
    required: tuple[str, ...] = ()


@dataclass(frozen=True)
class Map:
    """map[string]value."""
    value: Any


@dataclass(frozen=True)
class List:
    item: Any


@dataclass(frozen=True)
class Enum:
    values: tuple[str, ...]


@dataclass(frozen=True)
class Opaque:
    """A known key whose contents are not described here (affinity, probes, ...): only its JSON type is checked."""
    type: type


QUANTITY = "quantity"
OBJECT, ARRAY = Opaque(dict), Opaque(list)
_TYPE_NAMES = {str: "a string", bool: "a boolean", int: "an integer", float: "a number", dict: "an object",
               list: "a list"}


def _is(value: Any, tp: type) -> bool:
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, tp)


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def validate(value: Any, spec: Any, path: str) -> list[str]:
    """Problems of `value` against `spec`, each prefixed with its path (spec.workerGroupSpecs[0].replicas)."""
    at = path or "(top level)"
    if isinstance(spec, (type, Opaque)):
        tp = spec.type if isinstance(spec, Opaque) else spec
        if _is(value, tp):
            return []
        hint = ""
        if ".rayStartParams." in f".{path}" and tp is str:
            key = path.rsplit(".", 1)[-1]
            hint = f" (KubeRay's rayStartParams is map[string]string: quote it, {key}: \"{value}\")"
        return [f"{at}: expected {_TYPE_NAMES[tp]}, got {type(value).__name__} {value!r}{hint}"]
    if spec == QUANTITY:
        try:
            parse_quantity(value)
        except (ValueError, TypeError) as e:
            return [f"{at}: {e}"]
        return []
    if isinstance(spec, Enum):
        if value in spec.values:
            return []
        return [f"{at}: {value!r} is not one of {', '.join(spec.values)}"]
    if isinstance(spec, Map):
        if not isinstance(value, dict):
            return [f"{at}: expected a map, got {type(value).__name__} {value!r}"]
        return [p for k, v in value.items() for p in validate(v, spec.value, _join(path, k))]
    if isinstance(spec, List):
        if not isinstance(value, list):
            return [f"{at}: expected a list, got {type(value).__name__} {value!r}"]
        return [p for i, v in enumerate(value) for p in validate(v, spec.item, f"{path}[{i}]")]
    assert isinstance(spec, Obj), spec
    if not isinstance(value, dict):
        return [f"{at}: expected {spec.name} (an object), got {type(value).__name__} {value!r}"]
    problems = []
    for key in value:
        if key not in spec.fields:
            close = difflib.get_close_matches(str(key), spec.fields, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            known = f"; {spec.name} accepts: {', '.join(sorted(spec.fields))}" if len(spec.fields) <= 25 else ""
            problems.append(f"{at}: unknown key {key!r}{hint}{known}")
    problems += [f"{at}: missing required key {k!r} ({spec.name})" for k in spec.required if k not in value]
    for key, v in value.items():
        if key in spec.fields:
            problems += validate(v, spec.fields[key], _join(path, key))
    return problems


# --------------------------------------------------------------------------------------- Kubernetes core/v1 fields
# Field names of the Kubernetes core/v1 API (v1.33) for the objects a Ray pod template uses; fields added later as
# alpha (PodSpec.hostnameOverride, schedulingGroup) are not accepted. Objects the manifests do not use are Opaque:
# a known key, only its JSON type checked.

OBJECT_META = Obj("ObjectMeta", {
    "name": str, "generateName": str, "namespace": str, "labels": Map(str), "annotations": Map(str),
    "finalizers": List(str), "ownerReferences": ARRAY})
RESOURCES = Obj("ResourceRequirements", {"limits": Map(QUANTITY), "requests": Map(QUANTITY), "claims": ARRAY})
ENV_VAR = Obj("EnvVar", {"name": str, "value": str, "valueFrom": OBJECT}, required=("name",))
VOLUME_MOUNT = Obj("VolumeMount", {
    "name": str, "mountPath": str, "readOnly": bool, "recursiveReadOnly": str, "subPath": str,
    "mountPropagation": str, "subPathExpr": str}, required=("name", "mountPath"))
CONTAINER_PORT = Obj("ContainerPort", {
    "containerPort": int, "name": str, "protocol": Enum(("TCP", "UDP", "SCTP")), "hostPort": int, "hostIP": str},
    required=("containerPort",))
CONTAINER = Obj("Container", {
    "name": str, "image": str, "command": List(str), "args": List(str), "workingDir": str,
    "ports": List(CONTAINER_PORT), "envFrom": ARRAY, "env": List(ENV_VAR), "resources": RESOURCES,
    "resizePolicy": ARRAY, "restartPolicy": str, "volumeMounts": List(VOLUME_MOUNT), "volumeDevices": ARRAY,
    "livenessProbe": OBJECT, "readinessProbe": OBJECT, "startupProbe": OBJECT, "lifecycle": OBJECT,
    "terminationMessagePath": str, "terminationMessagePolicy": str,
    "imagePullPolicy": Enum(("Always", "IfNotPresent", "Never")), "securityContext": OBJECT, "stdin": bool,
    "stdinOnce": bool, "tty": bool}, required=("name",))
VOLUME_SOURCES = {
    "persistentVolumeClaim": Obj("PersistentVolumeClaimVolumeSource", {"claimName": str, "readOnly": bool},
                                 required=("claimName",)),
    "configMap": Obj("ConfigMapVolumeSource", {"name": str, "items": ARRAY, "defaultMode": int, "optional": bool}),
    "emptyDir": Obj("EmptyDirVolumeSource", {"medium": str, "sizeLimit": QUANTITY}),
    **{k: OBJECT for k in (
        "awsElasticBlockStore", "azureDisk", "azureFile", "cephfs", "cinder", "csi", "downwardAPI", "ephemeral",
        "fc", "flexVolume", "flocker", "gcePersistentDisk", "gitRepo", "glusterfs", "hostPath", "image", "iscsi",
        "nfs", "photonPersistentDisk", "portworxVolume", "projected", "quobyte", "rbd", "scaleIO", "secret",
        "storageos", "vsphereVolume")}}
VOLUME = Obj("Volume", {"name": str, **VOLUME_SOURCES}, required=("name",))
POD_SPEC = Obj("PodSpec", {
    "activeDeadlineSeconds": int, "affinity": OBJECT, "automountServiceAccountToken": bool,
    "containers": List(CONTAINER), "dnsConfig": OBJECT, "dnsPolicy": str, "enableServiceLinks": bool,
    "ephemeralContainers": ARRAY, "hostAliases": ARRAY, "hostIPC": bool, "hostNetwork": bool, "hostPID": bool,
    "hostUsers": bool, "hostname": str, "imagePullSecrets": ARRAY, "initContainers": List(CONTAINER),
    "nodeName": str, "nodeSelector": Map(str), "os": OBJECT, "overhead": Map(QUANTITY), "preemptionPolicy": str,
    "priority": int, "priorityClassName": str, "readinessGates": ARRAY, "resourceClaims": ARRAY,
    "resources": RESOURCES, "restartPolicy": Enum(("Always", "OnFailure", "Never")), "runtimeClassName": str,
    "schedulerName": str, "schedulingGates": ARRAY, "securityContext": OBJECT, "serviceAccount": str,
    "serviceAccountName": str, "setHostnameAsFQDN": bool, "shareProcessNamespace": bool, "subdomain": str,
    "terminationGracePeriodSeconds": int, "tolerations": ARRAY, "topologySpreadConstraints": ARRAY,
    "volumes": List(VOLUME)}, required=("containers",))
POD_TEMPLATE = Obj("PodTemplateSpec", {"metadata": OBJECT_META, "spec": POD_SPEC}, required=("spec",))
CONFIG_MAP = Obj("ConfigMap", {
    "apiVersion": str, "kind": str, "metadata": OBJECT_META, "data": Map(str), "binaryData": Map(str),
    "immutable": bool}, required=("metadata",))
PVC = Obj("PersistentVolumeClaim", {
    "apiVersion": str, "kind": str, "metadata": OBJECT_META, "spec": Obj("PersistentVolumeClaimSpec", {
        "accessModes": List(Enum(("ReadWriteOnce", "ReadOnlyMany", "ReadWriteMany", "ReadWriteOncePod"))),
        "resources": Obj("VolumeResourceRequirements", {"requests": Map(QUANTITY), "limits": Map(QUANTITY)}),
        "storageClassName": str, "volumeMode": Enum(("Filesystem", "Block")), "volumeName": str,
        "selector": OBJECT, "dataSource": OBJECT, "dataSourceRef": OBJECT, "volumeAttributesClassName": str},
        required=("accessModes",))}, required=("metadata", "spec"))

# --------------------------------------------------------------------------------------- KubeRay ray.io/v1 fields
# KubeRay v1.6.2: the generated field reference docs/reference/api.md at ray-project/kuberay@0a9eabde561ab59ab4bbe626
# 072c359da9214484 (the release tag's artifact, generated from the Go CRD types and checked against them by KubeRay's
# CI; vendored as ray-project/ray doc/source/cluster/kubernetes/references/api.md @ 099da225827d620ae9d934903e2ef6c5
# e73ca43c). Required keys from the json tags without omitempty in ray-operator/apis/ray/v1/raycluster_types.go
# @ 3275ee09f6a6c899c37e82ea6349785536de6bd4 (headGroupSpec, template, groupName, rayStartParams: older CRDs reject
# a group without rayStartParams, so it is always given).

AUTOSCALER_OPTIONS = Obj("AutoscalerOptions", {
    "resources": RESOURCES, "image": str, "imagePullPolicy": Enum(("Always", "IfNotPresent", "Never")),
    "securityContext": OBJECT, "idleTimeoutSeconds": int, "upscalingMode": Enum(("Default", "Aggressive",
    "Conservative")), "version": Enum(("v1", "v2")), "env": List(ENV_VAR), "envFrom": ARRAY,
    "volumeMounts": List(VOLUME_MOUNT)})
HEAD_GROUP = Obj("HeadGroupSpec", {
    "template": POD_TEMPLATE, "headService": OBJECT, "enableIngress": bool, "resources": Map(str),
    "labels": Map(str), "rayStartParams": Map(str),
    "serviceType": Enum(("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"))},
    required=("template", "rayStartParams"))
WORKER_GROUP = Obj("WorkerGroupSpec", {
    "suspend": bool, "groupName": str, "replicas": int, "minReplicas": int, "maxReplicas": int,
    "idleTimeoutSeconds": int, "resources": Map(str), "labels": Map(str), "rayStartParams": Map(str),
    "template": POD_TEMPLATE, "scaleStrategy": Obj("ScaleStrategy", {"workersToDelete": List(str)}),
    "numOfHosts": int}, required=("groupName", "template", "rayStartParams"))
RAY_CLUSTER_SPEC = Obj("RayClusterSpec", {
    "upgradeStrategy": Obj("RayClusterUpgradeStrategy", {"type": Enum(("Recreate", "None"))}),
    "authOptions": Obj("AuthOptions", {"enableK8sTokenAuth": bool, "secretName": str,
                                       "mode": Enum(("disabled", "token"))}),
    "suspend": bool, "managedBy": Enum(("ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue")),
    "autoscalerOptions": AUTOSCALER_OPTIONS, "headServiceAnnotations": Map(str), "enableInTreeAutoscaling": bool,
    "gcsFaultToleranceOptions": OBJECT, "headGroupSpec": HEAD_GROUP, "rayVersion": str,
    "workerGroupSpecs": List(WORKER_GROUP)}, required=("headGroupSpec",))
RAY_JOB_SPEC = Obj("RayJobSpec", {
    "activeDeadlineSeconds": int, "backoffLimit": int, "rayClusterSpec": RAY_CLUSTER_SPEC,
    "submitterPodTemplate": POD_TEMPLATE, "metadata": Map(str), "clusterSelector": Map(str),
    "submitterConfig": Obj("SubmitterConfig", {"backoffLimit": int}),
    "managedBy": Enum(("ray.io/kuberay-operator", "kueue.x-k8s.io/multikueue")), "deletionStrategy": OBJECT,
    "entrypoint": str, "runtimeEnvYAML": str, "jobId": str,
    "submissionMode": Enum(("K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode")),
    "entrypointResources": str, "entrypointNumCpus": float, "entrypointNumGpus": float,
    "ttlSecondsAfterFinished": int, "preRunningDeadlineSeconds": int, "shutdownAfterJobFinishes": bool,
    "suspend": bool})
KINDS = {
    ("ray.io/v1", "RayCluster"): Obj("RayCluster", {"apiVersion": str, "kind": str, "metadata": OBJECT_META,
                                                    "spec": RAY_CLUSTER_SPEC}, required=("metadata", "spec")),
    ("ray.io/v1", "RayJob"): Obj("RayJob", {"apiVersion": str, "kind": str, "metadata": OBJECT_META,
                                            "spec": RAY_JOB_SPEC}, required=("metadata", "spec")),
    ("v1", "ConfigMap"): CONFIG_MAP,
    ("v1", "PersistentVolumeClaim"): PVC,
}


# --------------------------------------------------------------------------------------- KubeRay: project rules


def _ray_pod(group: dict, where: str, pinned: tuple[int, int]) -> tuple[list[str], float, dict[str, str]]:
    """Problems of one head/worker group's Ray container (KubeRay's containers[0]), its CPUs as Ray sees them and its
    persistentVolumeClaim mounts ({mountPath: claimName})."""
    pod = group["template"]["spec"]
    if not pod["containers"]:
        return [f"{where}.template.spec.containers: empty; KubeRay runs Ray in containers[0]"], 0.0, {}
    ray = pod["containers"][0]
    problems = _image_problems(f"{where}.template.spec.containers[0].image", ray.get("image"), pinned)
    res = ray.get("resources", {})
    limits, requests = res.get("limits", {}), res.get("requests", {})
    for key in ("cpu", "memory"):
        if key not in limits:
            problems.append(f"{where}: the Ray container has no {key} limit; KubeRay gives Ray the limits, and "
                            f"without one Ray counts the whole node's {key} and oversubscribes it")
    for key in set(limits) & set(requests):
        if parse_quantity(requests[key]) > parse_quantity(limits[key]):
            problems.append(f"{where}: the Ray container requests more {key} ({requests[key]}) than its limit "
                            f"({limits[key]})")
    params = group["rayStartParams"]
    # `ray start` takes these as numbers (click int / float): a typo would fail only when the pod starts.
    number, nbytes = (r"\d+(\.\d+)?", "a number"), (r"\d+", "a number of bytes")
    numeric = {"num-cpus": number, "num-gpus": number, "memory": nbytes, "object-store-memory": nbytes}
    bad = {k for k, (pattern, _) in numeric.items() if k in params and not re.fullmatch(pattern, params[k])}
    problems += [f"{where}.rayStartParams.{k}: {params[k]!r} is not what `ray start --{k}` takes ({numeric[k][1]})"
                 for k in sorted(bad)]
    store = params.get("object-store-memory")
    if (store is not None and "object-store-memory" not in bad and "memory" in limits
            and int(store) > MAX_OBJECT_STORE_FRACTION * parse_quantity(limits["memory"])):
        problems.append(f"{where}.rayStartParams.object-store-memory: {int(store):,} bytes is more than "
                        f"{MAX_OBJECT_STORE_FRACTION:.0%} of the memory limit {limits['memory']}")
    # Ray's CPUs: num-cpus when given, else KubeRay passes the container's cpu limit.
    use_param = "num-cpus" in params and "num-cpus" not in bad
    cpus = float(params["num-cpus"]) if use_param else parse_quantity(limits.get("cpu", 0))
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for i, v in enumerate(pod.get("volumes", [])):
        sources = [k for k in v if k != "name"]
        if len(sources) != 1:
            problems.append(f"{where}.template.spec.volumes[{i}]: a volume needs exactly one source; found "
                            f"{sources or 'none'}")
    claims = {}
    for m in ray.get("volumeMounts", []):
        if m["name"] not in volumes:
            problems.append(f"{where}: volumeMount {m['name']!r} names no volume of the pod "
                            f"(volumes: {', '.join(volumes) or 'none'})")
        elif "persistentVolumeClaim" in volumes[m["name"]]:
            claims[m["mountPath"]] = volumes[m["name"]]["persistentVolumeClaim"]["claimName"]
    return problems, cpus, claims


def _check_ray_cluster_spec(spec: dict, where: str, pinned: tuple[int, int],
                            pvcs: dict[str, dict]) -> tuple[list[str], set[str]]:
    """Project rules for a RayClusterSpec; returns the problems and the mount paths of the shared volume."""
    problems = []
    version = _version(spec.get("rayVersion", ""))
    if version != pinned:
        problems.append(f"{where}.rayVersion: {spec.get('rayVersion')!r}; pyproject.toml pins Ray "
                        f"{pinned[0]}.{pinned[1]} (KubeRay picks the autoscaler and auth wiring by it)")
    auth = spec.get("authOptions")
    token_auth = auth is not None and auth.get("mode", "token") == "token"
    if token_auth and (version or (0, 0)) < MIN_TOKEN_AUTH_RAY:
        problems.append(f"{where}.authOptions: token authentication needs rayVersion >= "
                        f"{MIN_TOKEN_AUTH_RAY[0]}.{MIN_TOKEN_AUTH_RAY[1]}.0")

    head = spec["headGroupSpec"]
    host = head["rayStartParams"].get("dashboard-host", "0.0.0.0")  # KubeRay's default when the key is absent
    if host not in ("127.0.0.1", "localhost"):
        exposed = []
        if head.get("serviceType", "ClusterIP") != "ClusterIP":
            exposed.append(f"serviceType {head['serviceType']} publishes port {DASHBOARD_PORT} outside the cluster")
        if head.get("enableIngress"):
            exposed.append("enableIngress publishes the dashboard through an Ingress")
        if not token_auth:
            exposed.append("without authOptions (mode token) any pod in the cluster can submit jobs")
        if host != "0.0.0.0":
            exposed.append(f"dashboard-host {host!r} is neither 127.0.0.1 nor 0.0.0.0 behind a ClusterIP Service")
        problems += [f"{where}.headGroupSpec: the dashboard/job API listens on {host}, and {e}; bind it to "
                     f"127.0.0.1 or keep it on a ClusterIP Service with token auth" for e in exposed]

    groups = [("headGroupSpec", head)] + [(f"workerGroupSpecs[{i}]", g)
                                          for i, g in enumerate(spec.get("workerGroupSpecs", []))]
    start_cpus, mounts = 0.0, []
    for name, group in groups:
        p, cpus, claims = _ray_pod(group, f"{where}.{name}", pinned)
        problems += p
        mounts.append(claims)
        if name == "headGroupSpec":
            start_cpus += cpus
            continue
        lo, hi = group.get("minReplicas", 0), group.get("maxReplicas", 2**31 - 1)
        n = group.get("replicas", lo)
        if not lo <= n <= hi:
            problems.append(f"{where}.{name}: minReplicas <= replicas <= maxReplicas does not hold "
                            f"({lo} <= {n} <= {hi})")
        start_cpus += lo * cpus
    names = [g.get("groupName") for _, g in groups[1:]]
    problems += [f"{where}.workerGroupSpecs: groupName {n!r} is used twice" for n in set(names)
                 if names.count(n) > 1]
    if start_cpus < MIN_START_CPUS:
        problems.append(f"{where}: {start_cpus:g} CPUs are up before the autoscaler adds workers (head + "
                        f"minReplicas); ray-jobs' first actor pool needs {MIN_START_CPUS:g}: raise minReplicas")

    # One ReadWriteMany claim at one path in every Ray pod: the driver (head) and the Ray Data tasks (workers)
    # must see the same run directory.
    shared = {path for path, claim in mounts[0].items() if all(m.get(path) == claim for m in mounts[1:])}
    if not shared:
        problems.append(f"{where}: no persistentVolumeClaim is mounted at the same path in the head and every "
                        f"worker group; output.dir must be one shared filesystem at one path on every node")
    for path in sorted(shared):
        claim = mounts[0][path]
        if claim not in pvcs:
            problems.append(f"{where}: claim {claim!r} (mounted at {path}) is defined in no manifest under cluster/")
        elif "ReadWriteMany" not in pvcs[claim]["spec"]["accessModes"]:
            problems.append(f"{where}: claim {claim!r} is not ReadWriteMany; pods on different nodes cannot share it")
    return problems, shared


def _check_ray_job(job: dict, where: str, pinned: tuple[int, int], pvcs: dict[str, dict],
                   config_maps: dict[str, dict]) -> list[str]:
    spec = job["spec"]
    problems = []
    if ("rayClusterSpec" in spec) == ("clusterSelector" in spec):
        problems.append(f"{where}: give exactly one of rayClusterSpec (a cluster per job) and clusterSelector")
    if spec.get("ttlSecondsAfterFinished", 0) > 0 and not spec.get("shutdownAfterJobFinishes"):
        problems.append(f"{where}.ttlSecondsAfterFinished: KubeRay applies it only with shutdownAfterJobFinishes: "
                        f"true; without it the cluster is never deleted")
    argv = shlex.split(spec.get("entrypoint", ""))
    if argv[:2] != ["ray-jobs", "run"] or len(argv) < 3:
        return problems + [f"{where}.entrypoint: {spec.get('entrypoint')!r} is not `ray-jobs run CONFIG`"]
    if "rayClusterSpec" not in spec:
        return problems
    p, shared = _check_ray_cluster_spec(spec["rayClusterSpec"], f"{where}.rayClusterSpec", pinned, pvcs)
    problems += p
    # The entrypoint runs on the head: its config must come from a ConfigMap mounted there.
    config_path = Path(argv[2])
    pod = spec["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    text = None
    for m in pod["containers"][0].get("volumeMounts", []):
        volume = volumes.get(m["name"], {})
        if config_path.parent == Path(m["mountPath"]) and "configMap" in volume:
            cm = config_maps.get(volume["configMap"].get("name"))
            text = (cm or {}).get("data", {}).get(config_path.name)
    if text is None:
        return problems + [(f"{where}.entrypoint: {config_path} is not a key of a ConfigMap (defined under "
                            f"cluster/) mounted at {config_path.parent} in the head container")]
    return problems + [f"{where}: {config_path}: {e}" for e in check_job_config(text, shared)]


def check_job_config(text: str, shared: set[str]) -> list[str]:
    """A ray-jobs config as a cluster job gets it: loadable by ray_jobs.config, absolute input paths (the job has no
    working directory), output.dir on the shared volume."""
    from ray_jobs.config import load_config  # the project's own loader: unknown keys and wrong types fail

    with tempfile.NamedTemporaryFile("w", suffix=".toml") as fh:
        fh.write(text)
        fh.flush()
        try:
            cfg = load_config(fh.name)
        except (ValueError, TypeError) as e:
            return [f"ray-jobs rejects the config: {e}"]
    problems = [f"input.paths: {p!r} is relative; a RayJob has no working directory, give an absolute path"
                for p in cfg.input.paths if not Path(p).is_absolute()]
    if not any(Path(cfg.output.dir).is_relative_to(s) for s in shared):
        problems.append(f"output.dir {cfg.output.dir!r} is not on the shared volume ({', '.join(sorted(shared))}); "
                        f"the head renames what the worker pods write, so it must be one filesystem")
    return problems


def check_kubernetes(docs: list[dict], pinned: tuple[int, int], others: Sequence[dict] = ()) -> list[str]:
    """Problems of the Kubernetes objects `docs`; `others` (objects of the other files) resolve claims and
    ConfigMaps by name."""
    problems = []
    for i, doc in enumerate(docs):
        where = f"[{i}] {doc.get('kind', '?')} {doc.get('metadata', {}).get('name', '?')}"
        key = (doc.get("apiVersion"), doc.get("kind"))
        if key not in KINDS:
            problems.append(f"{where}: no field set for apiVersion {key[0]!r} kind {key[1]!r} (known: "
                            f"{', '.join(f'{a} {k}' for a, k in KINDS)}); add one to cluster/check_manifests.py")
            continue
        found = [f"{where}: {p}" for p in validate(doc, KINDS[key], "")]
        if "name" not in doc.get("metadata", {}):
            found.append(f"{where}: metadata.name is missing")
        problems += found
    if problems:  # the project rules below assume the structure is sound
        return problems
    everything = [*docs, *others]
    pvcs = {d["metadata"]["name"]: d for d in everything if d.get("kind") == "PersistentVolumeClaim"}
    config_maps = {d["metadata"]["name"]: d for d in everything if d.get("kind") == "ConfigMap"}
    for i, doc in enumerate(docs):
        where = f"[{i}] {doc['kind']} {doc['metadata']['name']}"
        if doc["kind"] == "RayCluster":
            problems += _check_ray_cluster_spec(doc["spec"], f"{where}: spec", pinned, pvcs)[0]
        elif doc["kind"] == "RayJob":
            problems += _check_ray_job(doc, f"{where}: spec", pinned, pvcs, config_maps)
    return problems


# --------------------------------------------------------------------------------------- Ray autoscaler YAML


def check_autoscaler(cfg: dict, text: str, pinned: tuple[int, int]) -> list[str]:
    """Ray's own schema and validation, then the project rules. `text` is the file (its comments carry the submit
    command)."""
    import jsonschema
    import ray.autoscaler
    from ray.autoscaler._private.util import prepare_config, validate_config

    schema = json.loads((Path(ray.autoscaler.__file__).parent / "ray-schema.json").read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    problems = [f"{'.'.join(map(str, e.absolute_path)) or '(top level)'}: {e.message} (Ray's ray-schema.json)"
                for e in sorted(validator.iter_errors(cfg), key=lambda e: list(map(str, e.absolute_path)))]
    if problems:
        return problems
    # What `ray up` runs before its first cloud call: the provider's defaults merged in (an unknown provider.type
    # fails here), then Ray's cross-field checks (head_node_type among the node types, sum of min_workers).
    # The rules below read the prepared config, so a key left to Ray's defaults is judged by what Ray will use.
    try:
        cfg = prepare_config(copy.deepcopy(cfg))
        validate_config(cfg)
    except (ValueError, RuntimeError, KeyError, jsonschema.ValidationError) as e:
        return [f"Ray's prepare_config/validate_config: {e}"]
    types = cfg["available_node_types"]
    start_cpus = 0.0
    for name, t in types.items():
        lo, hi = t.get("min_workers", 0), t.get("max_workers", cfg["max_workers"])
        if not lo <= hi <= cfg["max_workers"]:
            problems.append(f"available_node_types.{name}: min_workers <= max_workers <= the global max_workers "
                            f"does not hold ({lo} <= {hi} <= {cfg['max_workers']})")
        count = 1 if name == cfg["head_node_type"] else lo
        if count and "CPU" not in t["resources"]:
            problems.append(f"available_node_types.{name}: give resources.CPU, so that the CPUs up at start can be "
                            f"counted (Ray would otherwise ask the cloud for the instance type's)")
        start_cpus += count * t["resources"].get("CPU", 0)
    if start_cpus < MIN_START_CPUS:
        problems.append(f"{start_cpus:g} CPUs are up before the autoscaler adds workers (head + min_workers); "
                        f"ray-jobs' first actor pool needs {MIN_START_CPUS:g}: raise a worker type's min_workers")

    head_start = " ".join(c for c in cfg.get("head_start_ray_commands", []) if "ray start" in c)
    if not re.search(r"--dashboard-host[= ](127\.0\.0\.1|localhost)\b", head_start):
        problems.append("head_start_ray_commands: `ray start --head` must pass --dashboard-host=127.0.0.1 (Ray's AWS "
                        "defaults bind 0.0.0.0); reach the dashboard through `ray dashboard CLUSTER.yaml`")
    for key in ("image", "head_image", "worker_image"):
        if key in cfg.get("docker", {}):
            problems += _image_problems(f"docker.{key}", cfg["docker"][key], pinned)

    setup = cfg.get("setup_commands", [])
    checkout = [remote for remote, local in cfg.get("file_mounts", {}).items() if local in (".", "./")]
    install = [i for i, c in enumerate(setup) if "pip install" in c and any(
        re.search(re.escape(remote.replace("~", "")) + r"(\[[^\]]*\])?[\"']?(\s|$)", c) for remote in checkout)]
    torch = [i for i, c in enumerate(setup) if re.search(r"pip install .*torch", c) and TORCH_INDEX.search(c)]
    if not checkout or not install:
        problems.append("setup_commands: no `pip install` of the checkout that file_mounts copies from '.'")
    elif not torch or torch[0] > install[0]:
        problems.append("setup_commands: install torch from https://download.pytorch.org/whl/ (--index-url) before "
                        "the project; from PyPI the project's torch dependency pulls a multi-GB CUDA build")
    if "~/.ray/auth_token" not in cfg.get("file_mounts", {}) or not any(
            "RAY_AUTH_MODE=token" in c for c in setup):
        problems.append("token auth: file_mounts must copy ~/.ray/auth_token and setup_commands export "
                        "RAY_AUTH_MODE=token on every node")

    volumes = [o.split()[1] for o in cfg.get("docker", {}).get("run_options", []) if o.startswith("-v ")]
    same_path = [v.split(":")[0] for v in volumes if v.split(":")[0] == v.split(":")[1]]
    mounted = [p for p in same_path if any(re.search(rf"\bmount\b.*\s{re.escape(p)}$", c)
                                           for c in cfg.get("initialization_commands", []))]
    if not mounted:
        problems.append("shared storage: initialization_commands must mount a network filesystem and "
                        "docker.run_options pass it into the container at the same path (-v P:P); output.dir must "
                        "be one filesystem at one path on every node")

    submit = [line for line in text.splitlines() if line.lstrip("# ").startswith(("ray job submit",
                                                                                 "RAY_AUTH_MODE=token ray job submit"))]
    if not any(f"--address http://127.0.0.1:{DASHBOARD_PORT}" in s and " -- ray-jobs run " in s for s in submit):
        problems.append(f"the header must show how to run: `ray job submit --address http://127.0.0.1:"
                        f"{DASHBOARD_PORT} --working-dir . -- ray-jobs run CONFIG` (through `ray dashboard`)")
    return problems


# --------------------------------------------------------------------------------------- Dockerfile


def check_dockerfile(text: str, pinned: tuple[int, int]) -> list[str]:
    """The base image is the official rayproject/ray image of the pinned minor; tesseract-ocr and the project are
    installed, torch first from PyTorch's index."""
    args = dict(re.findall(r"^ARG\s+(\w+)=(\S+)", text, re.MULTILINE))
    bases = re.findall(r"^FROM\s+(\S+)", text, re.MULTILINE)
    if len(bases) != 1:
        return [f"Dockerfile: expected one FROM; found {bases}"]
    base = re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), bases[0])
    problems = [] if base.startswith("rayproject/ray:") else [
        f"Dockerfile: FROM {base}: build on the official rayproject/ray image"]
    problems += _image_problems("Dockerfile: FROM", base, pinned)
    runs = [re.sub(r"\$\{(\w+)\}", lambda m: args.get(m[1], m[0]), r)
            for r in re.findall(r"^RUN\s+((?:.*\\\n)*.*)", text, re.MULTILINE)]
    if not any(re.search(r"apt-get install .*\btesseract-ocr\b", r, re.DOTALL) for r in runs):
        problems.append("Dockerfile: tesseract-ocr is not installed (OCR of scanned PDF pages)")
    project = [i for i, r in enumerate(runs) if re.search(r"pip install .*(\s|\")\.(\[[^\]]*\])?(\"|\s|$)", r)]
    torch = [i for i, r in enumerate(runs) if re.search(r"pip install .*torch", r) and TORCH_INDEX.search(r)]
    if not project:
        problems.append("Dockerfile: no `pip install .` of the project")
    elif not torch or torch[0] > project[0]:
        problems.append("Dockerfile: install torch from https://download.pytorch.org/whl/ before the project")
    return problems


# --------------------------------------------------------------------------------------- all files


def load_yaml(path: Path) -> list[Any]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def check_all(root: Path = CLUSTER_DIR) -> dict[str, list[str]]:
    """{file relative to the repository: problems} for every YAML file and Dockerfile under `root`."""
    pinned = pinned_ray_minor()
    files = sorted([*root.rglob("*.yaml"), *root.rglob("*.yml")])
    docs = {f: load_yaml(f) for f in files}
    k8s = {f: d for f, d in docs.items() if any(isinstance(x, dict) and "apiVersion" in x for x in d)}
    results: dict[str, list[str]] = {}
    for f, d in docs.items():
        name = str(f.relative_to(REPO_DIR))
        if f in k8s:
            others = [x for g, xs in k8s.items() if g != f for x in xs]
            results[name] = check_kubernetes(d, pinned, others)
        elif len(d) == 1 and isinstance(d[0], dict) and "provider" in d[0]:
            results[name] = check_autoscaler(d[0], f.read_text(), pinned)
        else:
            results[name] = ["neither a Ray autoscaler config (provider:) nor Kubernetes objects (apiVersion:)"]
    for f in sorted(root.rglob("Dockerfile")):
        results[str(f.relative_to(REPO_DIR))] = check_dockerfile(f.read_text(), pinned)
    return results


def main() -> int:
    results = check_all()
    for name, problems in results.items():
        print(f"{name}: {'ok' if not problems else f'{len(problems)} problem(s)'}")
        for p in problems:
            print(f"  {p}")
    return 1 if any(results.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
