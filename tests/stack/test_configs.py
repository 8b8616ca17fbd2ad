"""Loki, Promtail and Grafana renderings. No validator binary for them exists here (Debian ships
none, and there is no network to fetch one), so the files are checked against the keys the tools'
documentation requires, and cross-checked against the compose file that mounts them."""

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests import spec
from tests.conftest import DASHBOARDS, ROOT, nix_eval, nix_value, require_tool
from tests.stack.helpers import compose_services, render_compose, render_yaml, stack_expr



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
    # Issue 9, defect 11: single node, only Loki dials its own gRPC server: loopback, both targets.
    assert config["server"]["grpc_listen_address"] == spec.LOOPBACK
    assert config["server"]["grpc_listen_port"] == spec.LOKI_GRPC_PORT
    # Issue 20, item 3: a single binary has no ring peers to give time before /ready turns 200
    # (upstream's 15 s default made up a third of its start).
    assert config["ingester"]["lifecycler"]["min_ready_duration"] == "0s"


def test_loki_state_lives_in_its_volume(project):
    _, files = project
    loki = compose_services(files)["loki"]
    prefix = yaml.safe_load(files["loki/loki.yml"])["common"]["path_prefix"]
    assert any(v.split(":")[1] == prefix and not v.startswith((".", "/")) for v in loki["volumes"])


# One line of each program of the stack, as it writes it, and the `level` every one must get
# (issue 8, defect 4: only warpwatch's lines had one). None: no level label.
LOG_LINES = {
    # warpwatch: pretty_env_logger, level right-aligned to five columns.
    " INFO  warpwatch::server > listening on 0.0.0.0:8080": "info",
    " WARN  warpwatch::visits > could not persist visits": "warn",
    "ERROR warpwatch > bind failed": "error",
    "DEBUG warpwatch::routes > GET /": "debug",
    "TRACE hyper::proto > parsed 3 headers": "trace",
    # The line's own prefix wins over a `level=` inside the message.
    " WARN  warpwatch::routes > odd query level=debug": "warn",
    # Prometheus 2.x (go-kit) and 3.x (slog, upper case), Loki, Promtail, Alloy, Grafana: logfmt.
    'ts=2026-12-02T05:00:00.000Z caller=main.go:512 level=info msg="No time or size retention was set"': "info",
    'time=2026-12-02T05:00:00.000Z level=INFO source=main.go:640 msg="Starting Prometheus Server"': "info",
    'level=warn ts=2026-12-02T05:00:00.1Z caller=loki.go:329 msg="per-tenant timeout not configured"': "warn",
    'level=error ts=2026-12-02T05:00:00.2Z caller=client.go:430 component=client msg="final error sending batch"': "error",
    'ts=2026-12-02T05:00:00.3Z level=debug component=loki.source.file msg="tailer running"': "debug",
    'logger=settings t=2026-12-02T05:00:00.41+00:00 level=info msg="Starting Grafana" version=12.4.0': "info",
    'logger=cleanup t=2026-12-02T05:00:00.42+00:00 level=warning msg="old style"': "warn",
    # No level word, or one outside the bounded set: no label at all.
    "listening without a level word": None,
    'msg="x" level=verbose': None,
}

# The Go templates the pipeline uses, by their text, with what Promtail's text/template makes of
# a value (ToLower/TrimRight are strings.ToLower/strings.TrimRight). A new template must be added
# here, with its meaning, before the emulation below can run it.
GO_TEMPLATES = {
    '{{ if eq (ToLower .Value) "warning" }}warn{{ else }}{{ ToLower .Value }}{{ end }}': lambda v: (
        "warn" if v.lower() == "warning" else v.lower()
    ),
    r'{{ TrimRight .Value "\r\n" }}': lambda v: v.rstrip("\r\n"),
}


def run_pipeline(stages, line, labels):
    """Promtail's pipeline stages as used here, applied to one entry: (labels, line), or None when
    the entry is dropped. Unknown stages fail the test rather than pass silently."""
    labels, extracted = dict(labels), {}
    for stage in stages:
        ((kind, cfg),) = stage.items()
        if kind == "json":
            doc = json.loads(line)
            for key, path in cfg["expressions"].items():
                value = doc
                for part in path.split("."):
                    value = value.get(part) if isinstance(value, dict) else None
                if value is not None:
                    extracted[key] = value
        elif kind == "regex":
            source = extracted.get(cfg["source"]) if "source" in cfg else line
            match = re.search(cfg["expression"], source) if source is not None else None
            if match:
                extracted.update({k: v for k, v in match.groupdict().items() if v is not None})
        elif kind == "template":
            value = GO_TEMPLATES[cfg["template"]](extracted.get(cfg["source"], ""))
            if value:
                extracted[cfg["source"]] = value
            else:
                extracted.pop(cfg["source"], None)
        elif kind == "labels":
            labels.update({k: extracted[src or k] for k, src in cfg.items() if extracted.get(src or k)})
        elif kind == "labeldrop":
            labels = {k: v for k, v in labels.items() if k not in cfg}
        elif kind == "match":
            assert cfg["action"] == "drop"
            selector = dict(re.findall(r'(\w+)="([^"]*)"', cfg["selector"]))
            if all(labels.get(k, "") == v for k, v in selector.items()):
                return None
        elif kind == "output":
            line = extracted[cfg["source"]]
        elif kind != "timestamp":
            raise AssertionError(f"stage {kind} is not emulated: teach run_pipeline what it does")
    return labels, line


def docker_json_line(message: str, tag: str, stream: str = "stderr") -> str:
    """A line as dockerd's json-file driver writes it (the program's newline kept in `log`)."""
    return json.dumps({"log": message + "\n", "stream": stream, "attrs": {"tag": tag}, "time": "2026-12-02T05:00:00.5Z"})


def test_promtail_compose_reads_tagged_json_file_logs(project):
    _, files = project
    config = yaml.safe_load(files["promtail/promtail.yml"])
    services = compose_services(files)
    shipper = services["promtail"]
    assert config["server"]["http_listen_port"] == spec.PORTS["promtail"]
    # Issue 9, defect 11: Promtail always starts a gRPC server; never on every interface.
    assert config["server"]["grpc_listen_address"] == spec.LOOPBACK
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
    # A container of another project is not shipped.
    file_labels = {**job["static_configs"][0]["labels"], "filename": "/var/lib/docker/containers/0a1b/0a1b-json.log"}
    file_labels = {k: v for k, v in file_labels.items() if not k.startswith("__")}
    assert run_pipeline(stages, docker_json_line("hello", "otherproject/web"), file_labels) is None


def test_promtail_compose_labels_every_services_level_and_ships_clean_lines(project):
    # Issue 8, defect 4: one `level` for every service; no per-container `filename` label (the
    # path holds the container id, so each recreated container started new streams); no newline.
    _, files = project
    (job,) = yaml.safe_load(files["promtail/promtail.yml"])["scrape_configs"]
    file_labels = {k: v for k, v in job["static_configs"][0]["labels"].items() if not k.startswith("__")}
    # What Promtail's file target adds to every entry before the pipeline runs.
    file_labels["filename"] = "/var/lib/docker/containers/0a1b2c/0a1b2c-json.log"
    for name in compose_services(files):
        for message, level in LOG_LINES.items():
            labels, line = run_pipeline(job["pipeline_stages"], docker_json_line(message, f"warpwatch/{name}"), file_labels)
            expected = {"job": "containers", "service": name, "stream": "stderr"} | ({"level": level} if level else {})
            assert labels == expected, (name, message)
            assert line == message, "the shipped line is the program's line, without dockerd's newline"


def test_promtail_host_reads_every_journal_labelled_by_unit():
    paths = ["/var/log/journal", "/var/log/journal/0123.warpwatch"]
    config = yaml.safe_load(render_yaml("promtail", "host", args=f"journalPaths = {nix_value(paths)};"))
    assert config["server"]["grpc_listen_address"] == spec.LOOPBACK
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
        for message, level in LOG_LINES.items():
            labels, line = run_pipeline(job["pipeline_stages"], message, {"job": "systemd-journal"})
            assert labels.get("level") == level, message
            assert line == message


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
    assert {p.name for p in dashboards} == {"service.json", "logs.json", "stack.json", "host.json"}
    uids = set()
    for path in dashboards:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["title"], path.name
        assert files[f"grafana/dashboards/{path.name}"] == path.read_text()
        # A row only groups the panels below it: it queries nothing.
        for panel in (p for p in dashboard["panels"] if p["type"] != "row"):
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
