"""The Helm chart, rendered by the real helm (.ci/setup unpacks it into .venv/helm): `lint --strict`, `template`
for every mode, every object validated against the Kubernetes schemas (kubernetes-validate) and RayCluster/RayJob
against KubeRay's CRDs, the spec in the ConfigMap against distill's own validation, and bad values refused."""

from __future__ import annotations

import copy
import functools
import json
import os
import re
import shutil
import subprocess

import jsonschema
import kubernetes_validate
import pytest
import yaml

from distill.spec import parse_spec
from distill.verify.distributed import VERIFIER_RESOURCE
from tests.conftest import REPO

CHART = REPO / "helm" / "distill"
CRDS = REPO / "tests" / "data" / "k8s-schemas"
K8S_VERSION = "1.30.0"
HELM = os.environ.get("HELM") or (str(REPO / ".venv/helm/helm") if (REPO / ".venv/helm/helm").exists()
                                  else shutil.which("helm"))
if not HELM:
    pytest.fail("helm not found: run `bash .ci/setup` (it unpacks helm into .venv/helm/), or set HELM", pytrace=False)

MODES = {
    "cluster": [],
    "job": ["--set", "mode=job"],
    "cluster-autoscaling-existing-claim": ["--set", "autoscaling.enabled=true",
                                           "--set", "artifacts.persistence.existingClaim=shared-runs",
                                           "--set", "serviceAccount.create=true", "--set", "rayAuth.enabled=false"],
    "job-object-store": ["--set", "mode=job", "--set", "artifacts.persistence.enabled=false",
                         "--set", "artifacts.objectStore.url=s3://bucket/distill",
                         "--set", "artifacts.objectStore.existingSecret=s3-creds",
                         "--set", "apiKeys.existingSecret=distill-keys", "--set", "job.driverOnTrainer=false",
                         "--set", "rayAuth.secretName=ray-token"],
}


def helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([HELM, *args], capture_output=True, text=True, timeout=120)


def render(*args: str) -> list[dict]:
    proc = helm("template", "rel", str(CHART), "--namespace", "ml", *args)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def by_kind(objs: list[dict]) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for o in objs:
        out.setdefault(o["kind"], []).append(o)
    return out


def _strict(schema):
    """What `kubectl apply --validate=strict` does: an unknown field is an error, not silently pruned."""
    if isinstance(schema, dict):
        schema = {k: _strict(v) for k, v in schema.items()}
        if "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [_strict(v) for v in schema]
    return schema


@functools.cache
def crd_validator(kind: str) -> jsonschema.Draft7Validator:
    crd = yaml.safe_load((CRDS / f"ray.io_{kind.lower()}s.yaml").read_text())
    version = next(v for v in crd["spec"]["versions"] if v["name"] == "v1")
    return jsonschema.Draft7Validator(_strict(version["schema"]["openAPIV3Schema"]))


def crd_errors(obj: dict) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in crd_validator(obj["kind"]).iter_errors(obj)]


def validate(obj: dict) -> None:
    name = obj["metadata"]["name"]
    if obj["apiVersion"] == "ray.io/v1":
        assert not crd_errors(obj), crd_errors(obj)
        # KubeRay's own admission rules: DNS-1035 names, short enough for the suffixes it appends.
        assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", name), name
        assert len(name) <= {"RayCluster": 53, "RayJob": 47}[obj["kind"]], name
    else:
        kubernetes_validate.validate(obj, K8S_VERSION, strict=True)


def pod_templates(obj: dict) -> list[tuple[str, dict]]:
    spec = obj["spec"]["rayClusterSpec"] if obj["kind"] == "RayJob" else obj["spec"]
    out = [("head", spec["headGroupSpec"]["template"])]
    out += [(g["groupName"], g["template"]) for g in spec.get("workerGroupSpecs", [])]
    if obj["kind"] == "RayJob":
        out.append(("submitter", obj["spec"]["submitterPodTemplate"]))
    return out


# -- helm lint, and every mode's objects valid --------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_lint_strict(mode):
    proc = helm("lint", "--strict", str(CHART), *MODES[mode])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 chart(s) failed" in proc.stdout


@pytest.mark.parametrize("mode", MODES)
def test_every_rendered_object_is_valid(mode):
    objs = render(*MODES[mode])
    kinds = by_kind(objs)
    ray_kind = "RayJob" if "job" in mode.split("-") else "RayCluster"
    assert len(kinds[ray_kind]) == 1 and len(kinds["ConfigMap"]) == 1
    assert not {"RayCluster", "RayJob"} <= kinds.keys()  # one mode, one Ray object
    assert "CustomResourceDefinition" not in kinds and not (CHART / "crds").exists()  # KubeRay owns its CRDs
    for obj in objs:
        validate(obj)


def test_crd_validation_is_not_vacuous():
    cluster = by_kind(render())["RayCluster"][0]
    broken = copy.deepcopy(cluster)
    broken["spec"]["workerGroupSpecs"][0]["replica"] = 2  # typo of replicas
    del broken["spec"]["workerGroupSpecs"][1]["groupName"]
    broken["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = []
    errors = crd_errors(broken)
    assert any("'replica' was unexpected" in e for e in errors), errors
    assert any("'groupName' is a required property" in e for e in errors), errors
    assert any(e.startswith("spec.headGroupSpec.template.spec.containers.0.resources.limits.cpu") for e in errors)


# -- what the defaults deploy ----------------------------------------------------------------------------------

def test_cluster_groups_resources_and_security():
    kinds = by_kind(render())
    spec = kinds["RayCluster"][0]["spec"]
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert list(groups) == ["teacher", "trainer", "verifier"]
    for name, gpus in (("teacher", 1), ("trainer", 1), ("verifier", 0)):
        g = groups[name]
        assert g["replicas"] == 1 and g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
        container = g["template"]["spec"]["containers"][0]
        assert container["resources"]["limits"].get("nvidia.com/gpu", 0) == gpus
        assert container["resources"]["requests"].get("nvidia.com/gpu", 0) == gpus
        assert yaml.safe_load(g["rayStartParams"]["resources"]) == f'{{"distill.{name}":1}}'
    assert groups["teacher"]["template"]["spec"]["tolerations"][0]["key"] == "nvidia.com/gpu"
    # The verify stage's Ray tasks ask for the resource the verifier group advertises: the group gets that work.
    assert VERIFIER_RESOURCE in json.loads(yaml.safe_load(groups["verifier"]["rayStartParams"]["resources"]))
    assert spec["authOptions"] == {"mode": "token"} and spec["rayVersion"] == "2.60.0"
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"

    for _, tmpl in pod_templates(kinds["RayCluster"][0]):
        pod = tmpl["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] == 1000
        for c in pod["containers"]:
            assert c["securityContext"]["allowPrivilegeEscalation"] is False
            assert c["securityContext"]["capabilities"]["drop"] == ["ALL"]
            mounts = {m["name"]: m["mountPath"] for m in c["volumeMounts"]}
            assert mounts == {"spec": "/etc/distill", "artifacts": "/artifacts", "dshm": "/dev/shm"}
        volumes = {v["name"]: v for v in pod["volumes"]}
        assert volumes["artifacts"]["persistentVolumeClaim"]["claimName"] == "rel-distill-artifacts"
        assert volumes["spec"]["configMap"]["name"] == "rel-distill-spec"

    pvc = kinds["PersistentVolumeClaim"][0]
    assert pvc["metadata"]["name"] == "rel-distill-artifacts" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    assert "Secret" not in kinds  # the chart references Secrets, never holds keys


def test_configmap_holds_a_valid_spec_writing_to_the_volume():
    cm = by_kind(render())["ConfigMap"][0]
    data = yaml.safe_load(cm["data"]["spec.yaml"])
    assert data["output_dir"] == f"/artifacts/runs/{data['name']}"
    spec = parse_spec(data)  # distill's own validation: unknown keys, types, catalog names
    assert spec.sampling.n == 4 and spec.teacher.num_gpus == 1
    # Pods roll when the spec changes.
    for _, tmpl in pod_templates(by_kind(render())["RayCluster"][0]):
        assert len(tmpl["metadata"]["annotations"]["checksum/spec"]) == 64
    other = by_kind(render("--set", "spec.seed=7"))["RayCluster"][0]
    assert pod_templates(other)[0][1]["metadata"]["annotations"]["checksum/spec"] != \
        pod_templates(by_kind(render())["RayCluster"][0])[0][1]["metadata"]["annotations"]["checksum/spec"]


def test_job_mode_runs_once_and_cleans_up():
    kinds = by_kind(render("--set", "mode=job", "--set", "job.ttlSecondsAfterFinished=600",
                           "--set", "job.activeDeadlineSeconds=86400"))
    job = kinds["RayJob"][0]["spec"]
    assert job["shutdownAfterJobFinishes"] is True and job["ttlSecondsAfterFinished"] == 600
    assert job["activeDeadlineSeconds"] == 86400 and job["backoffLimit"] == 0
    assert job["entrypoint"] == ("python /app/jobs/distill.py --spec /etc/distill/spec.yaml "
                                 "--output-dir /artifacts/runs/r1-distill-qwen-1.5b")
    # The driver trains: it holds a trainer pod's GPU.
    assert job["entrypointNumGpus"] == 1 and yaml.safe_load(job["entrypointResources"]) == {"distill.trainer": 1}
    assert job["metadata"] == {"distill.name": "r1-distill-qwen-1.5b",
                               "distill.output_dir": "/artifacts/runs/r1-distill-qwen-1.5b"}
    assert job["submitterPodTemplate"]["spec"]["restartPolicy"] == "Never"
    assert [g["groupName"] for g in job["rayClusterSpec"]["workerGroupSpecs"]] == ["teacher", "trainer", "verifier"]
    assert "RayCluster" not in kinds


def test_placement_values_land_in_their_group():
    kinds = by_kind(render(
        "--set", "workerGroups.teacher.replicas=3", "--set", "workerGroups.teacher.maxReplicas=8",
        "--set", "workerGroups.teacher.gpus=2",
        "--set-string", "workerGroups.teacher.nodeSelector.cloud\\.google\\.com/gke-accelerator=nvidia-h100-80gb",
        "--set", "workerGroups.verifier.enabled=false",
        "--set-json", 'workerGroups.trainer.tolerations=[{"key":"dedicated","value":"train","effect":"NoSchedule"}]',
        "--set-json", 'head.nodeSelector={"pool":"cpu"}'))
    spec = kinds["RayCluster"][0]["spec"]
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    assert list(groups) == ["teacher", "trainer"]
    teacher = groups["teacher"]
    assert teacher["replicas"] == 3 and teacher["maxReplicas"] == 8
    assert teacher["template"]["spec"]["nodeSelector"] == {"cloud.google.com/gke-accelerator": "nvidia-h100-80gb"}
    assert teacher["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert groups["trainer"]["template"]["spec"]["tolerations"] == [
        {"key": "dedicated", "value": "train", "effect": "NoSchedule"}]
    assert "nodeSelector" not in groups["trainer"]["template"]["spec"]
    assert spec["headGroupSpec"]["template"]["spec"]["nodeSelector"] == {"pool": "cpu"}
    validate(kinds["RayCluster"][0])


def test_object_store_and_secrets():
    kinds = by_kind(render(*MODES["job-object-store"]))
    job = kinds["RayJob"][0]["spec"]
    assert job["entrypoint"].endswith("--upload s3://bucket/distill/runs/r1-distill-qwen-1.5b")
    assert "entrypointResources" not in job  # driverOnTrainer=false: the driver stays on the head
    assert "PersistentVolumeClaim" not in kinds
    assert job["rayClusterSpec"]["authOptions"] == {"mode": "token", "secretName": "ray-token"}
    for group, tmpl in pod_templates(kinds["RayJob"][0]):
        if group == "submitter":
            continue
        pod = tmpl["spec"]
        assert {v["name"]: v for v in pod["volumes"]}["artifacts"] == {"name": "artifacts", "emptyDir": {}}
        env_from = pod["containers"][0]["envFrom"]
        assert env_from == [{"secretRef": {"name": "distill-keys"}}, {"secretRef": {"name": "s3-creds"}}]


def test_notes_tell_how_to_reach_and_use_it():
    cluster = helm("install", "rel", str(CHART), "--dry-run=client", "--namespace", "ml")
    assert cluster.returncode == 0, cluster.stderr
    notes = cluster.stdout.split("NOTES:", 1)[1]
    assert "kubectl -n ml port-forward svc/rel-distill-head-svc 8265:8265" in notes
    assert "distill submit my_spec.yaml --address http://127.0.0.1:8265" in notes
    job = helm("install", "rel", str(CHART), "--dry-run=client", "--namespace", "ml", "--set", "mode=job")
    assert "kubectl -n ml get rayjob rel-distill" in job.stdout.split("NOTES:", 1)[1]


# -- bad values are refused, saying what is wrong -------------------------------------------------------------

BAD = [
    (["--set", "mode=serve"], "at '/mode': value must be one of 'cluster', 'job'"),
    (["--set", "workerGroups.teacher.gpus=-1"], "at '/workerGroups/teacher/gpus': minimum: got -1, want 0"),
    (["--set", "workerGroups.teacher.gpu=1"], "at '/workerGroups/teacher': additional properties 'gpu' not allowed"),
    (["--set", "head.rayStartParams.num-cpus=0"], "at '/head/rayStartParams/num-cpus': got number, want string"),
    (["--set", "podSecurityContext.runAsNonRoot=false"], "at '/podSecurityContext/runAsNonRoot': value must be true"),
    (["--set", "artifacts.objectStore.url=bucket/x"], "at '/artifacts/objectStore/url'"),
    (["--set", "workerGroups.trainer.resources.limits.memory=lots"],
     "at '/workerGroups/trainer/resources/limits/memory'"),
    (["--set", "spec.name=has space"], "at '/spec/name'"),
    (["--set", "artifacts.persistence.enabled=false"], "set artifacts.objectStore.url"),
    (["--set", "workerGroups.teacher.replicas=9"],
     "workerGroups.teacher: replicas (9) must lie between minReplicas (0) and maxReplicas (4)"),
    (["--set", "spec.teacher.replicas=8"],
     "spec.teacher asks for 8 GPUs (replicas x num_gpus) but the teacher group has at most 4"),
    (["--set", "spec.output_dir=/tmp/x"], "spec.output_dir is set by the chart"),
    (["--set", "fullnameOverride=9lives"], "is not a DNS-1035 label"),
    (["--set", "mode=job", "--set", "workerGroups.trainer.enabled=false"],
     "job.driverOnTrainer needs workerGroups.trainer.enabled=true"),
]


@pytest.mark.parametrize("args,message", BAD, ids=[" ".join(a[1::2]) for a, _ in BAD])
def test_bad_values_are_refused_with_a_clear_message(args, message):
    proc = helm("template", "rel", str(CHART), *args)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


def test_unquoted_n_in_the_spec_is_refused(tmp_path):
    values = tmp_path / "values.yaml"
    values.write_text("spec:\n  sampling:\n    n: 8\n")  # YAML 1.1: the key is the boolean false
    proc = helm("template", "rel", str(CHART), "-f", str(values))
    assert proc.returncode != 0 and 'Quote it: "n": 4' in proc.stderr, proc.stderr
