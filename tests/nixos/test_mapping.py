"""The declaration mapped to NixOS option values: limits, rotation, healthcheck timers, wiring,
secrets and defaults, evaluated offline from nix/stack/nixos/."""

import json
import re

import pytest
import yaml

from tests import spec
from tests.conftest import free_port, http_get, nix_eval, stop_process, wait_for
from tests.nixos.helpers import (
    FAKE,
    SECRETS,
    is_default,
    mapping,
    mapping_error,
    mapping_expr,
    mapping_raw,
    merged,
    start_prometheus,
)

SHIPPERS = ["promtail", "alloy"]


def active(shipper: str) -> list[str]:
    return [shipper if name == "promtail" else name for name in spec.SERVICES]


def unit_of(name: str, shipper: str) -> str:
    """The shipper runs in a unit of the stack's own; the node exporter in nixpkgs' unit; the
    others under their service's name."""
    if name == shipper:
        return f"warpwatch-{name}"
    return "prometheus-node-exporter" if name == "node-exporter" else name


@pytest.fixture(scope="module", params=SHIPPERS)
def shipped(request):
    shipper = request.param
    return shipper, merged(mapping({"logShipper": shipper}))


def test_memory_max_per_unit_is_the_required_limit(shipped):
    shipper, config = shipped
    units = config["systemd"]["services"]
    required = dict(spec.MEMORY_MIB, alloy=spec.MEMORY_MIB["promtail"])
    for name in active(shipper):
        assert units[unit_of(name, shipper)]["serviceConfig"]["MemoryMax"] == f"{required[name]}M", name


def test_memory_override_changes_the_unit():
    config = merged(mapping({"services": {"loki": {"memoryMiB": 1024}, "warpwatch": {"memoryMiB": 300}}}))
    assert config["systemd"]["services"]["loki"]["serviceConfig"]["MemoryMax"] == "1024M"
    assert config["systemd"]["services"]["warpwatch"]["serviceConfig"]["MemoryMax"] == "300M"


def test_every_unit_logs_to_the_default_journal_bounded_by_the_rotation(shipped):
    shipper, config = shipped
    # No namespace: `journalctl -u` works for every unit and nixpkgs' Prometheus reload finds
    # its message (issue 9, defects 6 and 12).
    for name in active(shipper):
        assert "LogNamespace" not in config["systemd"]["services"][unit_of(name, shipper)]["serviceConfig"], name
    assert not any(path.startswith("systemd/journald") for path in config["environment"]["etc"])
    settings = dict(line.split("=", 1) for line in config["services"]["journald"]["extraConfig"].splitlines())
    units = len(active(shipper))
    assert settings == {
        "SystemMaxFileSize": f"{spec.LOG_FILE_MIB}M",
        "SystemMaxFiles": str(spec.LOG_FILES * units),
        "SystemMaxUse": f"{spec.LOG_FILE_MIB * spec.LOG_FILES * units}M",
    }


def test_journal_limits_are_a_default_the_host_wins_over():
    assert is_default(mapping_raw()["service"]["services"]["journald"]["extraConfig"])


def test_a_host_journald_config_without_a_total_cap_is_warned_about():
    # `host.journal` is the host's effective [Journal] settings, as nix/module.nix reads them back.
    warnings = merged(mapping(host={"journal": {"ForwardToConsole": "yes"}}))["warnings"]
    assert any("services.journald.extraConfig is set on this host without SystemMaxUse=" in w for w in warnings)
    capped = merged(mapping(host={"journal": {"SystemMaxUse": "2G"}}))["warnings"]
    assert not any("services.journald.extraConfig" in w for w in capped)


def test_rotation_override_reaches_the_journal_limits():
    text = merged(mapping({"logging": {"maxSizeMiB": 20, "maxFiles": 5}}))["services"]["journald"]["extraConfig"]
    assert "SystemMaxFileSize=20M" in text and f"SystemMaxUse={20 * 5 * len(spec.SERVICES)}M" in text


def test_healthcheck_timer_per_service(shipped):
    shipper, config = shipped
    interval = f"{spec.HEALTHCHECK_INTERVAL_S}s"
    for name in active(shipper):
        timer = config["systemd"]["timers"][f"warpwatch-health-{name}"]
        assert timer["wantedBy"] == ["timers.target"]
        assert timer["timerConfig"]["OnUnitActiveSec"] == interval
        assert timer["timerConfig"]["OnActiveSec"] == interval
        check = config["systemd"]["services"][f"warpwatch-health-{name}"]
        script = check["script"]
        url = f"http://127.0.0.1:{spec.PORTS[name]}{spec.HEALTH_PATHS[name]}"
        assert f"{FAKE['warpwatch']}/bin/warpwatch probe --timeout {spec.HEALTHCHECK_TIMEOUT_S} {url}" in script
        assert f"-ge {spec.HEALTHCHECK_RETRIES} ]" in script
        assert f"systemctl restart --no-block {unit_of(name, shipper)}.service" in script
        assert check["serviceConfig"]["Type"] == "oneshot"
        # The failure counter lives in /run and survives between runs until reboot.
        assert check["serviceConfig"]["RuntimeDirectory"] == f"warpwatch-health/{name}"
        assert check["serviceConfig"]["RuntimeDirectoryPreserve"] == "yes"


def test_loopback_and_closed_firewall_by_default():
    config = merged(mapping())
    warpwatch_addr = f"{spec.LOOPBACK}:{spec.PORTS['warpwatch']}"
    assert config["systemd"]["services"]["warpwatch"]["environment"]["WARPWATCH_ADDR"] == warpwatch_addr
    assert config["networking"]["firewall"]["allowedTCPPorts"] == []
    services = config["services"]
    assert services["grafana"]["settings"]["server"]["http_addr"] == spec.LOOPBACK
    assert services["grafana"]["openFirewall"] is False
    assert services["prometheus"]["listenAddress"] == spec.LOOPBACK
    assert services["loki"]["configuration"]["server"]["http_listen_address"] == spec.LOOPBACK
    alloy = merged(mapping({"logShipper": "alloy"}))["systemd"]["services"]["warpwatch-alloy"]
    assert f"--server.http.listen-addr={spec.LOOPBACK}:{spec.PORTS['alloy']}" in alloy["serviceConfig"]["ExecStart"]


def test_exposing_the_service_on_purpose():
    config = merged(mapping(listenAddress="0.0.0.0", openFirewall=True))
    assert config["systemd"]["services"]["warpwatch"]["environment"]["WARPWATCH_ADDR"] == f"0.0.0.0:{spec.PORTS['warpwatch']}"
    assert config["networking"]["firewall"]["allowedTCPPorts"] == [spec.PORTS["warpwatch"]]
    assert config["warnings"] == [w for w in config["warnings"] if "openFirewall" not in w]


def test_open_firewall_on_loopback_warns():
    config = merged(mapping(openFirewall=True, grafana={**SECRETS, "openFirewall": True}))
    assert any(f"services.warpwatch.openFirewall opens port {spec.PORTS['warpwatch']}" in w for w in config["warnings"])
    grafana_warning = f"services.warpwatch.grafana.openFirewall opens port {spec.PORTS['grafana']}"
    assert any(grafana_warning in w for w in config["warnings"])


def test_port_override_moves_service_scrape_and_probe():
    config = merged(mapping({"services": {"warpwatch": {"port": 18080}}}))
    assert config["systemd"]["services"]["warpwatch"]["environment"]["WARPWATCH_ADDR"] == "127.0.0.1:18080"
    jobs = {job["job_name"]: job for job in config["services"]["prometheus"]["scrapeConfigs"]}
    assert jobs["warpwatch/warpwatch"]["static_configs"][0]["targets"] == ["127.0.0.1:18080"]
    assert "http://127.0.0.1:18080/healthz" in config["systemd"]["services"]["warpwatch-health-warpwatch"]["script"]


def test_extra_environment_wins():
    env = merged(mapping(extraEnvironment={"RUST_LOG": "debug", "EXTRA": "1"}))["systemd"]["services"]["warpwatch"][
        "environment"
    ]
    assert env["RUST_LOG"] == "debug" and env["EXTRA"] == "1"


def test_promtail_is_our_own_unit_and_warned_about():
    result = mapping({"logShipper": "promtail"})
    config = merged(result)
    unit = config["systemd"]["services"]["warpwatch-promtail"]
    assert unit["serviceConfig"]["ExecStart"] == (
        f"{FAKE['promtail']}/bin/promtail -config.file=/etc/warpwatch-promtail/promtail.yaml"
    )
    assert unit["serviceConfig"]["DynamicUser"] is True
    assert unit["serviceConfig"]["SupplementaryGroups"] == ["systemd-journal"]
    assert unit["serviceConfig"]["ProtectSystem"] == "strict"
    assert "alloy" not in config["services"]
    assert any("Promtail is end-of-life" in w for w in config["warnings"])
    # The service alone (monitoring off) does not warn about a shipper it does not run.
    assert not any("Promtail" in w for w in result["service"]["warnings"])


def test_promtail_without_package_is_a_clear_assertion():
    config = merged(mapping({"logShipper": "promtail"}, promtail=None))
    failed = [a["message"] for a in config["assertions"] if not a["assertion"]]
    assert any("needs services.warpwatch.monitoring.promtailPackage" in m for m in failed)
    assert "warpwatch-promtail" not in config["systemd"]["services"]


def test_alloy_runs_the_promtail_config_in_its_own_unit():
    config = merged(mapping({"logShipper": "alloy"}))
    # services.alloy stays the host's (issue 9, defect 4): its pipeline is never replaced.
    assert "alloy" not in config["services"]
    unit = config["systemd"]["services"]["warpwatch-alloy"]["serviceConfig"]
    assert unit["ExecStart"].startswith(f"{FAKE['alloy']}/bin/alloy run --config.format=promtail ")
    assert unit["ExecStart"].endswith(" /etc/warpwatch-alloy/promtail.yaml")
    assert f"--server.http.listen-addr=127.0.0.1:{spec.PORTS['alloy']}" in unit["ExecStart"]
    assert unit["StateDirectory"] == "warpwatch-alloy"
    assert "warpwatch-alloy/promtail.yaml" in config["environment"]["etc"]
    assert not any("end-of-life" in w for w in config["warnings"])


def test_shipper_reads_the_default_journal(shipped):
    shipper, config = shipped
    unit_name = unit_of(shipper, shipper)
    promtail_config = yaml.safe_load(config["environment"]["etc"][f"{unit_name}/promtail.yaml"]["text"])
    assert [job["journal"]["path"] for job in promtail_config["scrape_configs"]] == ["/var/log/journal"]
    assert promtail_config["positions"]["filename"] == f"/var/lib/{unit_name}/positions.yaml"
    unit = config["systemd"]["services"][unit_name]
    assert unit["serviceConfig"]["SupplementaryGroups"] == ["systemd-journal"]
    assert "ExecStartPre" not in unit["serviceConfig"] and "wants" not in unit
    assert promtail_config["clients"][0]["url"] == f"http://{spec.LOOPBACK}:{spec.PORTS['loki']}/loki/api/v1/push"


def test_prometheus_scrapes_the_five_services(shipped):
    shipper, config = shipped
    prometheus = config["services"]["prometheus"]
    jobs = prometheus["scrapeConfigs"]
    # Job names of our own, the `job` label the dashboards select on (issue 9, defect 2).
    assert sorted(job["job_name"] for job in jobs) == sorted(f"warpwatch/{name}" for name in active(shipper))
    assert sorted(job["static_configs"][0]["labels"]["job"] for job in jobs) == sorted(active(shipper))
    # The declared interval, whatever a host's global one is.
    declared = nix_eval("(import ./nix/stack { }).stack.prometheus.scrapeIntervalSeconds")
    assert {job["scrape_interval"] for job in jobs} == {f"{declared}s"}
    assert prometheus["stateDir"] == "prometheus"
    # The rules as a file (nixpkgs checks it with promtool): content-addressed, so equal paths
    # mean equal contents.
    rules_file = nix_eval(
        f'let api = import ./nix/stack {{ overrides.logShipper = "{shipper}"; }}; '
        'in builtins.toFile "warpwatch-rules.yml" api.configs.rules'
    )
    assert prometheus["ruleFiles"] == [rules_file]


def test_prometheus_retention_follows_the_declaration():
    prometheus = merged(mapping({"prometheus": {"retention": "7d"}}))["services"]["prometheus"]
    assert prometheus["retentionTime"] == "7d"


def test_grafana_secrets_stay_out_of_the_store():
    config = merged(mapping())
    grafana = config["services"]["grafana"]
    security = grafana["settings"]["security"]
    assert security["admin_password"] == "$__file{/run/credentials/grafana.service/admin-password}"
    assert security["secret_key"] == "$__file{/run/credentials/grafana.service/secret-key}"
    credentials = config["systemd"]["services"]["grafana"]["serviceConfig"]["LoadCredential"]
    assert credentials == [
        f"admin-password:{SECRETS['adminPasswordFile']}",
        f"secret-key:{SECRETS['secretKeyFile']}",
    ]
    datasources = grafana["provision"]["datasources"]["settings"]["datasources"]
    assert {(d["uid"], d["url"]) for d in datasources} == {
        (name, f"http://{spec.LOOPBACK}:{spec.PORTS[name]}") for name in ("prometheus", "loki")
    }
    assert grafana["provision"]["dashboards"]["settings"]["providers"][0]["options"]["path"] == "/etc/test-dashboards"


def test_grafana_dashboards_default_to_the_repository_directory():
    expr = mapping_expr().replace('"dashboardsPath" = "/etc/test-dashboards";', "")
    assert nix_eval(
        f"let m = {expr}; in (builtins.head m.monitoring.services.grafana.provision.dashboards.settings.providers)"
        ".options.path == (import ./nix/stack { }).configs.dashboardsDir"
    )


@pytest.mark.parametrize(
    ("grafana", "expected"),
    [
        ({}, r"grafana\.adminPasswordFile must be set when services\.warpwatch\.monitoring\.enable"),
        ({"adminPasswordFile": "/run/a"}, r"grafana\.secretKeyFile must be set"),
        ({**SECRETS, "secretKeyFile": "secrets/key"}, r"secretKeyFile must be an absolute path \(got \"secrets/key\"\)"),
        ({**SECRETS, "adminPasswordFile": "/nix/store/x-pw"}, r"adminPasswordFile points into the Nix store"),
    ],
)
def test_bad_secret_files_fail_with_a_clear_message(grafana, expected):
    config = merged(mapping(grafana=grafana))
    failed = [a["message"] for a in config["assertions"] if not a["assertion"]]
    assert any(re.search(expected, m) for m in failed), failed


def test_valid_configuration_has_no_failed_assertion(shipped):
    _, config = shipped
    assert [a["message"] for a in config["assertions"] if not a["assertion"]] == []


def test_state_directory_must_be_under_var_lib():
    error = mapping_error({"services": {"warpwatch": {"dataDir": "/srv/warpwatch"}}})
    # Forcing the unit shows the problem by name.
    assert "services.warpwatch.dataDir must be under /var/lib" in error


def test_visits_persist_in_the_state_directory():
    unit = merged(mapping())["systemd"]["services"]["warpwatch"]
    assert unit["serviceConfig"]["StateDirectory"] == "warpwatch"
    assert unit["environment"]["WARPWATCH_DATA_DIR"] == "/var/lib/warpwatch"


@pytest.mark.parametrize("shipper", SHIPPERS)
def test_the_journal_labels_every_unit_with_its_compose_service_name(tmp_path, shipper):
    # Issue 20, item 5: the shipper runs in a unit of the stack's own (warpwatch-promtail), yet its
    # lines carry service="promtail" as in compose. Promtail relabels with Prometheus' relabel
    # code: a real Prometheus applies the rendered rules to targets carrying each unit's name.
    config = merged(mapping({"logShipper": shipper}))
    text = config["environment"]["etc"][f"{unit_of(shipper, shipper)}/promtail.yaml"]["text"]
    relabels = yaml.safe_load(text)["scrape_configs"][0]["relabel_configs"]
    names = active(shipper)
    targets = [
        {"targets": [f"127.0.0.1:{index + 1}"], "labels": {"__journal__systemd_unit": f"{unit_of(name, shipper)}.service"}}
        for index, name in enumerate(names)
    ]
    scrape = {"job_name": "journal", "scrape_interval": "1h", "static_configs": targets, "relabel_configs": relabels}
    port = free_port()
    server = start_prometheus(tmp_path, {"scrape_configs": [scrape]}, port)
    url = f"http://127.0.0.1:{port}/api/v1/targets"
    try:
        active_targets = wait_for(
            "the relabelled targets",
            lambda: (t := json.loads(http_get(url)[1])["data"]["activeTargets"]) and len(t) == len(names) and t,
            deadline=60,
            processes=[server],
        )
    finally:
        stop_process(server)
    services = {t["discoveredLabels"]["__journal__systemd_unit"]: t["labels"].get("service") for t in active_targets}
    assert services == {f"{unit_of(name, shipper)}.service": name for name in names}
