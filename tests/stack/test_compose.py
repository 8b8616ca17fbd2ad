"""The rendered compose project, asserted from the files scripts/render-compose writes."""

import os
import re
import subprocess

import pytest
import yaml

from tests import spec
from tests.conftest import require_tool
from tests.stack.helpers import compose_services, render_compose, run_render_compose

HEALTHCHECK_TIMINGS = (f"{spec.HEALTHCHECK_INTERVAL_S}s", f"{spec.HEALTHCHECK_TIMEOUT_S}s", spec.HEALTHCHECK_RETRIES)


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    out = tmp_path_factory.mktemp("compose") / "project"
    return out, render_compose(out)


def test_memory_limits_honoured_by_compose_v1_and_v2(project):
    _, files = project
    services = compose_services(files)
    assert set(services) == set(spec.SERVICES)
    for name, mib in spec.MEMORY_MIB.items():
        service = services[name]
        # docker compose v2 applies deploy.resources.limits without --compatibility; v1 reads mem_limit.
        assert service["deploy"]["resources"]["limits"]["memory"] == f"{mib}m", name
        assert service["mem_limit"] == f"{mib}m", name


def test_json_file_rotation_and_tag_on_every_service(project):
    _, files = project
    tags = set()
    for name, service in compose_services(files).items():
        logging = service["logging"]
        assert logging["driver"] == spec.LOG_DRIVER, name
        assert logging["options"]["max-size"] == f"{spec.LOG_FILE_MIB}m", name
        assert logging["options"]["max-file"] == str(spec.LOG_FILES), name
        assert name in logging["options"]["tag"], name
        tags.add(logging["options"]["tag"])
    assert len(tags) == len(compose_services(files)), "tags must tell services apart"


def test_healthchecks_probe_each_tools_own_endpoint(project):
    _, files = project
    for name, service in compose_services(files).items():
        check = service["healthcheck"]
        assert (check["interval"], check["timeout"], check["retries"]) == HEALTHCHECK_TIMINGS, name
        assert re.fullmatch(r"\d+s", check["start_period"]), name
        url = f"http://127.0.0.1:{spec.PORTS[name]}{spec.HEALTH_PATHS[name]}"
        assert check["test"] == ["CMD", "/bin/warpwatch", "probe", url], name
    assert compose_services(files)["loki"]["healthcheck"]["start_period"] != "0s"


def seconds(value: str) -> int:
    assert re.fullmatch(r"\d+s", value), value
    return int(value[:-1])


def worst_time_to_healthy(services: dict) -> int:
    """Seconds from `up` until the last service can be healthy on Docker 20.10, which runs a
    container's first probe one interval after its start: a service starts once every
    `service_healthy` dependency is healthy."""
    healthy: dict[str, int] = {}

    def visit(name: str, path=()) -> int:
        assert name not in path, f"depends_on cycle: {path}"
        if name not in healthy:
            service = services[name]
            start = max((visit(dep, (*path, name)) for dep in service.get("depends_on", {})), default=0)
            healthy[name] = start + seconds(service["healthcheck"]["interval"])
        return healthy[name]

    return max(visit(name) for name in services)


def test_every_service_can_be_healthy_within_one_interval_plus_5s(project):
    # Issue 8, defect 6: three health-gated depends_on levels made it ~2 minutes.
    _, files = project
    services = compose_services(files)
    for name, service in services.items():
        assert service["restart"] == "unless-stopped", name
        for dep in service.get("depends_on", {}):
            assert dep in services, f"{name} depends on unknown {dep}"
    assert worst_time_to_healthy(services) <= spec.HEALTHCHECK_INTERVAL_S + spec.TIME_TO_HEALTHY_SLACK_S


def test_worst_time_to_healthy_counts_every_health_gated_level():
    """The bound above can fail: a chain of two health-gated levels takes three intervals."""
    check = {"interval": f"{spec.HEALTHCHECK_INTERVAL_S}s"}
    healthy = {"condition": "service_healthy"}
    services = {
        "a": {"healthcheck": check},
        "b": {"healthcheck": check, "depends_on": {"a": healthy}},
        "c": {"healthcheck": check, "depends_on": {"b": healthy}},
    }
    assert worst_time_to_healthy(services) == 3 * spec.HEALTHCHECK_INTERVAL_S


def test_only_grafana_and_warpwatch_published_on_loopback(project):
    _, files = project
    services = compose_services(files)
    published = {name for name, s in services.items() if s.get("ports")}
    assert published == spec.PUBLISHED
    for name in published:
        assert services[name]["ports"] == [f"{spec.LOOPBACK}:{spec.PORTS[name]}:{spec.PORTS[name]}"]
    networks = yaml.safe_load(files["docker-compose.yml"])["networks"]
    for name, service in services.items():
        if name not in published:
            assert all(networks[n].get("internal") for n in service["networks"]), name


def test_hardening_non_root_read_only_no_docker_socket(project):
    _, files = project
    services = compose_services(files)
    assert "docker.sock" not in "".join(files.values())
    for name, service in services.items():
        assert service["cap_drop"] == ["ALL"], name
        assert service["read_only"] is True, name
        assert "no-new-privileges:true" in service["security_opt"], name
        uid = int(service["user"].split(":")[0])
        if name == "promtail":
            # Reads root-owned json-file logs: uid 0 with no capability, read-only mounts only.
            assert uid == 0
            assert all(v.endswith(":ro") for v in service["volumes"] if v.startswith("/"))
        else:
            assert uid >= 1000, name
    assert "version" not in yaml.safe_load(files["docker-compose.yml"])


def test_state_in_named_volumes(project):
    _, files = project
    doc = yaml.safe_load(files["docker-compose.yml"])
    for name in ("prometheus", "loki", "grafana", "warpwatch"):
        named = [v for v in doc["services"][name]["volumes"] if not v.startswith(("/", "."))]
        assert named, f"{name} has no named volume"
        assert named[0].split(":")[0] in doc["volumes"], name


def test_every_mounted_file_and_referenced_config_is_rendered(project):
    out, files = project
    services = compose_services(files)
    for name, service in services.items():
        mounts = {}
        for volume in service["volumes"]:
            source, target = volume.split(":")[:2]
            if source.startswith("./"):
                assert (out / source).is_dir(), f"{name} mounts missing {source}"
                mounts[target] = out / source
        for arg in service.get("command", []):
            for path in re.findall(r"(/etc/\S+\.ya?ml)", arg):
                mount = next((t for t in mounts if path.startswith(t + "/")), None)
                assert mount, f"{name}: {path} is not under a mounted directory"
                assert (mounts[mount] / path[len(mount) + 1 :]).is_file(), f"{name}: {path} not rendered"
    provisioning = out / "grafana" / "provisioning"
    assert (provisioning / "datasources" / "datasources.yml").is_file()
    assert {p.name for p in (out / "grafana" / "dashboards").glob("*.json")} >= {
        "service.json",
        "logs.json",
        "stack.json",
    }


GRAFANA_SECRETS = (
    ("GF_SECURITY_ADMIN_PASSWORD", "grafana-admin-password"),
    ("GF_SECURITY_SECRET_KEY", "grafana-secret-key"),
)


def test_grafana_secrets_are_file_references_the_binary_expands(project):
    # Issue 8, defect 2: `*__FILE` variables are handled by the upstream image's run.sh, not by
    # the grafana binary our image starts; the binary expands `$__file{PATH}` in every setting.
    # In the compose file `$` is written `$$` (compose's escape; `docker-compose config` prints it
    # escaped again). What the container receives is checked by tests/live (stand-in Grafana).
    _, files = project
    doc = yaml.safe_load(files["docker-compose.yml"])
    grafana = doc["services"]["grafana"]
    env = grafana["environment"]
    assert not [var for var in env if var.endswith("__FILE")], env
    for var, secret in GRAFANA_SECRETS:
        assert env[var] == f"$$__file{{/run/secrets/{secret}}}"
        assert secret in grafana["secrets"]
        assert doc["secrets"][secret]["file"] == f"./secrets/{secret}"


def test_secrets_are_not_rendered(tmp_path):
    out = tmp_path / "project"
    render_compose(out)
    assert not (out / "secrets").exists()


def test_grafana_stays_offline_and_finds_every_provisioning_directory(project):
    # Issue 8, defect 3: Grafana 12 installs plugins from grafana.com at start and polls it for
    # updates unless told not to, and logs an error for each provisioning directory it misses.
    out, files = project
    env = compose_services(files)["grafana"]["environment"]
    assert env["GF_PLUGINS_PREINSTALL_DISABLED"] == "true"
    assert env["GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES"] == "false"
    assert env["GF_ANALYTICS_CHECK_FOR_UPDATES"] == "false"
    assert env["GF_ANALYTICS_REPORTING_ENABLED"] == "false"
    provisioning = out / "grafana" / "provisioning"
    for kind in spec.GRAFANA_PROVISIONING_DIRS:
        directory = provisioning / kind
        yml = sorted(directory.glob("*.yml"))
        assert yml, f"{directory} is missing or has no provisioning file"
        for path in yml:
            assert yaml.safe_load(path.read_text())["apiVersion"] == 1, path


def test_render_compose_keeps_existing_secrets(tmp_path):
    out = tmp_path / "project"
    (out / "secrets").mkdir(parents=True)
    secret = out / "secrets" / "grafana-admin-password"
    secret.write_text("hunter2\n")
    secret.chmod(0o600)
    render_compose(out)
    assert secret.read_text() == "hunter2\n"
    assert oct(secret.stat().st_mode & 0o777) == "0o600"


def docker_compose_config(out):
    """`docker-compose config` in the rendered directory, with dummy secret files in place."""
    tool = require_tool("docker-compose")
    secrets = out / "secrets"
    secrets.mkdir(exist_ok=True)
    for name in ("grafana-admin-password", "grafana-secret-key"):
        (secrets / name).write_text("test-only\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("COMPOSE_")}
    proc = subprocess.run([tool, "config"], cwd=out, capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "WARNING" not in proc.stderr.upper(), proc.stderr
    return yaml.safe_load(proc.stdout)


def test_docker_compose_config_accepts_the_project(tmp_path):
    out = tmp_path / "project"
    render_compose(out)
    normalized = docker_compose_config(out)
    loki_limit = spec.MEMORY_MIB["loki"]
    assert normalized["services"]["loki"]["mem_limit"] in (f"{loki_limit}m", loki_limit * spec.MIB, str(loki_limit * spec.MIB))


def test_docker_compose_config_rejects_a_broken_project(tmp_path):
    """The check above can fail: a depends_on on a missing service is refused."""
    out = tmp_path / "broken"
    files = render_compose(out)
    doc = yaml.safe_load(files["docker-compose.yml"])
    doc["services"]["grafana"]["depends_on"] = {"nonexistent": {"condition": "service_healthy"}}
    (out / "docker-compose.yml").write_text(yaml.safe_dump(doc))
    with pytest.raises(AssertionError):
        docker_compose_config(out)


def test_alloy_replaces_promtail_and_runs_the_same_config(tmp_path):
    files = render_compose(tmp_path / "alloy", '{ logShipper = "alloy"; }')
    docker_compose_config(tmp_path / "alloy")
    services = compose_services(files)
    assert "alloy" in services and "promtail" not in services
    command = services["alloy"]["command"]
    assert command[:2] == ["run", "--config.format=promtail"]
    assert command[-1] == "/etc/promtail/promtail.yml"
    assert "./promtail:/etc/promtail:ro" in services["alloy"]["volumes"]
    # Alloy takes the shipper's place, limit included.
    assert services["alloy"]["deploy"]["resources"]["limits"]["memory"] == f"{spec.MEMORY_MIB['promtail']}m"
    assert services["alloy"]["healthcheck"]["test"][-1] == f"http://127.0.0.1:{spec.PORTS['alloy']}{spec.HEALTH_PATHS['alloy']}"


def test_override_changes_one_value_everywhere(tmp_path):
    files = render_compose(tmp_path / "o", "{ services.grafana.port = 3300; services.loki.memoryMiB = 1024; }")
    services = compose_services(files)
    assert services["grafana"]["ports"] == ["127.0.0.1:3300:3300"]
    assert services["grafana"]["environment"]["GF_SERVER_HTTP_PORT"] == "3300"
    assert services["grafana"]["healthcheck"]["test"][-1] == "http://127.0.0.1:3300/api/health"
    assert services["loki"]["mem_limit"] == "1024m"
    assert services["prometheus"]["mem_limit"] == f"{spec.MEMORY_MIB['prometheus']}m"
    assert f"vector({1024 * spec.MIB})" in files["prometheus/rules.yml"]
    targets = [
        c["static_configs"][0]["targets"] for c in yaml.safe_load(files["prometheus/prometheus.yml"])["scrape_configs"]
    ]
    assert ["grafana:3300"] in targets


UPSTREAM_PROMETHEUS = """{
  services.prometheus = {
    image = { name = "prom/prometheus"; tag = "v3.5.0"; };
    uid = 65534;
    dataDir = "/prometheus";
    healthcheckTest = [ "CMD" "wget" "-q" "--spider" "http://127.0.0.1:9090/-/healthy" ];
  };
}"""


def test_an_upstream_image_pinned_by_version_brings_its_own_healthcheck(tmp_path):
    files = render_compose(tmp_path / "upstream", UPSTREAM_PROMETHEUS)
    normalized = docker_compose_config(tmp_path / "upstream")
    prometheus = compose_services(files)["prometheus"]
    assert prometheus["image"] == "prom/prometheus:v3.5.0"
    assert prometheus["user"] == "65534:65534"
    assert prometheus["healthcheck"]["test"] == ["CMD", "wget", "-q", "--spider", "http://127.0.0.1:9090/-/healthy"]
    # Timings stay the declared ones, and the state volume follows the image's data directory.
    check = prometheus["healthcheck"]
    assert (check["interval"], check["timeout"], check["retries"]) == HEALTHCHECK_TIMINGS
    assert "prometheus-data:/prometheus" in prometheus["volumes"]
    assert "--storage.tsdb.path=/prometheus" in prometheus["command"]
    # Every other service keeps the built-in probe.
    assert normalized["services"]["loki"]["healthcheck"]["test"][:3] == ["CMD", "/bin/warpwatch", "probe"]


def test_render_compose_help_and_bad_arguments(tmp_path):
    help_text = run_render_compose("--help")
    assert help_text.returncode == 0
    assert "Usage: scripts/render-compose [--overrides FILE.nix] OUT_DIR" in help_text.stdout
    assert "set -" not in help_text.stdout, "--help must print the header comment only"
    missing = run_render_compose("--overrides", str(tmp_path / "nope.nix"), str(tmp_path / "out"))
    assert missing.returncode == 2
    assert f"overrides file not found: {tmp_path / 'nope.nix'}" in missing.stderr
    assert not (tmp_path / "out").exists()


def test_render_compose_accepts_paths_with_spaces(tmp_path):
    directory = tmp_path / "my stack"
    directory.mkdir()
    files = render_compose(directory / "out dir", "{ services.grafana.port = 3300; }")
    assert compose_services(files)["grafana"]["ports"] == [f"{spec.LOOPBACK}:3300:3300"]
