"""Loki, Promtail and Grafana renderings. No validator binary for them exists here (Debian ships
none, and there is no network to fetch one), so the files are checked against the keys the tools'
documentation requires, and cross-checked against the compose file that mounts them."""

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

import spec
from conftest import ROOT, nix_eval, nix_value, require_tool
from stack_helpers import compose_services, render_compose, render_yaml, stack_expr

DASHBOARDS = ROOT / "configs" / "grafana" / "dashboards"


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    out = tmp_path_factory.mktemp("configs") / "project"
    return out, render_compose(out)


def yamllint(paths) -> subprocess.CompletedProcess:
    """The repository's yamllint configuration, strict, on paths."""
    tool = require_tool("yamllint")
    return subprocess.run([tool, "--strict", "-c", str(ROOT / ".yamllint"), *map(str, paths)], capture_output=True, text=True)


def test_yamllint_accepts_every_rendered_yaml(project, tmp_path):
    out, files = project
    yaml_files = [out / rel for rel in files if rel.endswith((".yml", ".yaml"))]
    assert len(yaml_files) >= 7
    host = []
    for config in ("prometheus", "loki", "promtail"):
        path = tmp_path / f"host-{config}.yml"
        path.write_text(render_yaml(config, "host"))
        host.append(path)
    proc = yamllint(yaml_files + host)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_yamllint_would_catch_a_defect(tmp_path):
    bad = tmp_path / "bad.yml"
    bad.write_text("a:\n- b\n")  # sequence not indented under its key
    proc = yamllint([bad])
    assert proc.returncode != 0 and "indentation" in proc.stdout, proc.stdout


def test_toyaml_keeps_tricky_strings_as_strings():
    text = nix_eval(
        '(import ./nix/stack { }).toYAML { no = "no"; version = "3.10"; mode = "0600"; '
        'quote = "a \\"b\\" c: d # e"; empty = { }; list = [ [ 1 2 ] { x = null; } ]; "on" = true; }'
    )
    assert yaml.safe_load(text) == {
        "no": "no",
        "version": "3.10",
        "mode": "0600",
        "quote": 'a "b" c: d # e',
        "empty": {},
        "list": [[1, 2], {"x": None}],
        "on": True,
    }


@pytest.mark.parametrize("target", ["compose", "host"])
def test_loki_single_node_filesystem_tsdb_v13_with_retention(target):
    config = yaml.safe_load(render_yaml("loki", target))
    assert config["auth_enabled"] is False
    assert config["server"]["http_listen_port"] == spec.PORTS["loki"]
    common = config["common"]
    assert common["replication_factor"] == 1
    assert common["ring"]["kvstore"]["store"] == "inmemory"
    prefix = common["path_prefix"]
    for key in ("chunks_directory", "rules_directory"):
        assert common["storage"]["filesystem"][key].startswith(prefix + "/")
    (schema,) = config["schema_config"]["configs"]
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", schema["from"])
    assert (schema["store"], schema["object_store"], schema["schema"]) == ("tsdb", "filesystem", "v13")
    assert schema["index"] == {"prefix": "index_", "period": "24h"}  # tsdb requires a 24h period
    compactor = config["compactor"]
    assert compactor["retention_enabled"] is True
    assert compactor["delete_request_store"] == "filesystem"  # mandatory once retention is on
    assert compactor["working_directory"].startswith(prefix + "/")
    assert re.fullmatch(r"\d+h", config["limits_config"]["retention_period"])
    assert config["analytics"]["reporting_enabled"] is False
    assert "shared_store" not in json.dumps(config)  # Loki 2.x key, rejected by 3.x
    listen = config["server"]["http_listen_address"]
    assert listen == ("127.0.0.1" if target == "host" else "0.0.0.0")


def test_loki_state_lives_in_its_volume(project):
    _, files = project
    loki = compose_services(files)["loki"]
    prefix = yaml.safe_load(files["loki/loki.yml"])["common"]["path_prefix"]
    assert any(v.split(":")[1] == prefix and not v.startswith((".", "/")) for v in loki["volumes"])


PRETTY_ENV_LOGGER_LINES = {
    " INFO  warpwatch::server > listening on 0.0.0.0:8080": "INFO",
    " WARN  warpwatch::visits > could not persist visits": "WARN",
    "ERROR warpwatch > bind failed": "ERROR",
    "DEBUG warpwatch::routes > GET /": "DEBUG",
    "TRACE hyper::proto > parsed 3 headers": "TRACE",
}


def level_of(stages, line):
    regexes = [s["regex"]["expression"] for s in stages if "regex" in s and "source" not in s["regex"]]
    assert len(regexes) == 1
    match = re.match(regexes[0], line)
    return match and match.group("level")


def test_promtail_compose_reads_tagged_json_file_logs(project):
    _, files = project
    config = yaml.safe_load(files["promtail/promtail.yml"])
    services = compose_services(files)
    shipper = services["promtail"]
    assert config["server"]["http_listen_port"] == spec.PORTS["promtail"]
    assert config["clients"] == [{"url": f"http://loki:{spec.PORTS['loki']}/loki/api/v1/push"}]
    # positions.yaml must be in a writable volume of the shipper (its root filesystem is read-only).
    positions_dir = str(Path(config["positions"]["filename"]).parent)
    writable = [v.split(":")[1] for v in shipper["volumes"] if not v.startswith((".", "/"))]
    assert positions_dir in writable
    (job,) = config["scrape_configs"]
    path = job["static_configs"][0]["labels"]["__path__"]
    host_mounts = [v.split(":") for v in shipper["volumes"] if v.startswith("/")]
    assert any(path.startswith(target + "/") and mode == "ro" for _, target, mode in host_mounts)
    assert path.endswith("-json.log")
    stages = job["pipeline_stages"]
    assert all(len(stage) == 1 for stage in stages), "each stage has exactly one key"
    json_stage = stages[0]["json"]["expressions"]
    assert json_stage["output"] == "log" and json_stage["tag"] == "attrs.tag"
    # Every service's logging tag yields its own name as the `service` label.
    tag_regex = next(s["regex"] for s in stages if s.get("regex", {}).get("source") == "tag")
    for name, service in services.items():
        match = re.match(tag_regex["expression"], service["logging"]["options"]["tag"])
        assert match and match.group("service") == name, name
    assert not re.match(tag_regex["expression"], "otherproject/web")
    assert any(s.get("match", {}).get("action") == "drop" for s in stages)
    for line, level in PRETTY_ENV_LOGGER_LINES.items():
        assert level_of(stages, line) == level, line
    assert level_of(stages, "listening without a level word") is None
    assert {"labels": {"level": "level"}} in stages


def test_promtail_host_reads_every_journal_labelled_by_unit():
    paths = ["/var/log/journal", "/var/log/journal/0123.warpwatch"]
    config = yaml.safe_load(render_yaml("promtail", "host", args=f"journalPaths = {nix_value(paths)};"))
    assert config["clients"] == [{"url": f"http://127.0.0.1:{spec.PORTS['loki']}/loki/api/v1/push"}]
    assert config["server"]["http_listen_address"] == "127.0.0.1"
    jobs = config["scrape_configs"]
    assert [j["journal"]["path"] for j in jobs] == paths
    assert len({j["job_name"] for j in jobs}) == len(jobs)
    for job in jobs:
        assert re.fullmatch(r"\d+h", job["journal"]["max_age"])
        relabels = {r["target_label"]: r for r in job["relabel_configs"]}
        assert relabels["unit"]["source_labels"] == ["__journal__systemd_unit"]
        assert re.fullmatch(relabels["service"]["regex"], "warpwatch.service")
        for line, level in PRETTY_ENV_LOGGER_LINES.items():
            assert level_of(job["pipeline_stages"], line) == level


def test_grafana_provisioning_matches_compose(project):
    _, files = project
    grafana = compose_services(files)["grafana"]
    datasources = yaml.safe_load(files["grafana/provisioning/datasources/datasources.yml"])
    assert datasources["apiVersion"] == 1
    by_uid = {d["uid"]: d for d in datasources["datasources"]}
    assert set(by_uid) == {"prometheus", "loki"}
    for uid, ds in by_uid.items():
        assert ds["type"] == uid and ds["name"] and ds["access"] == "proxy"
        assert ds["url"] == f"http://{uid}:{spec.PORTS[uid]}"
    assert sum(1 for d in by_uid.values() if d.get("isDefault")) == 1
    providers = yaml.safe_load(files["grafana/provisioning/dashboards/dashboards.yml"])
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["name"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in grafana["volumes"]}
    assert mounts[provider["options"]["path"]] == "./grafana/dashboards"
    assert mounts[grafana["environment"]["GF_PATHS_PROVISIONING"]] == "./grafana/provisioning"


def test_grafana_host_rendering_uses_loopback():
    config = nix_eval(stack_expr('s.configs.grafana { target = "host"; dashboardsPath = "/srv/dashboards"; }'))
    urls = {d["uid"]: d["url"] for d in config["datasources"]["datasources"]}
    assert urls == {name: f"http://{spec.LOOPBACK}:{spec.PORTS[name]}" for name in ("prometheus", "loki")}
    assert config["dashboards"]["providers"][0]["options"]["path"] == "/srv/dashboards"


def all_datasources(node):
    if isinstance(node, dict):
        if isinstance(node.get("datasource"), dict):
            yield node["datasource"]
        for value in node.values():
            yield from all_datasources(value)
    elif isinstance(node, list):
        for value in node:
            yield from all_datasources(value)


def test_every_dashboard_datasource_uid_is_provisioned(project):
    _, files = project
    provisioned = {
        (d["type"], d["uid"]) for d in yaml.safe_load(files["grafana/provisioning/datasources/datasources.yml"])["datasources"]
    }
    dashboards = sorted(DASHBOARDS.glob("*.json"))
    assert {p.name for p in dashboards} == {"service.json", "logs.json", "stack.json"}
    uids = set()
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["title"], path.name
        assert files[f"grafana/dashboards/{path.name}"] == path.read_text()
        for panel in dashboard["panels"]:
            assert panel.get("datasource"), f"{path.name}: panel {panel['title']} has no datasource"
            assert panel.get("targets"), f"{path.name}: panel {panel['title']} has no query"
        for ds in all_datasources(dashboard):
            assert (ds["type"], ds["uid"]) in provisioned, f"{path.name}: {ds}"
        uids.add(dashboard["uid"])
    assert len(uids) == len(dashboards)


def test_logs_dashboard_filters_by_service_and_level():
    dashboard = json.loads((DASHBOARDS / "logs.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert {"service", "level"} <= set(variables)
    # LogQL refuses selectors whose matchers all match "": "All" services must be ".+".
    assert variables["service"]["allValue"] == ".+"
    kinds = {p["type"] for p in dashboard["panels"]}
    assert "logs" in kinds
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            assert 'service=~"$service"' in expr and 'level=~"$level"' in expr, expr
            assert expr.count("{") == expr.count("}") and expr.count("(") == expr.count(")"), expr
    volume = next(p for p in dashboard["panels"] if p["type"] == "timeseries")
    assert "sum by (level)" in volume["targets"][0]["expr"]
