"""The mapping on a host that already runs things of its own (issue 9): its Prometheus, Grafana,
Alloy and journald settings win, the stack adds to them, and it warns or fails evaluation with
the option to set where the two cannot coexist. `host` is what nix/module.nix reads back from
the host's configuration."""

import json
import os
import subprocess

import pytest
import yaml

from tests import spec
from tests.conftest import free_port, http_get, nix_eval, nix_value, stop_process, wait_for, write_files
from tests.nixos.helpers import (
    FAKE,
    SECRETS,
    guarded,
    is_default,
    mapping,
    mapping_raw,
    merged,
    promtool_check_config,
    start_prometheus,
)

LIVED_IN = {
    "prometheus": {"listenAddress": "0.0.0.0", "port": 9091, "evaluationInterval": "1m"},
    "grafana": {"address": "10.0.0.5", "port": 3300, "secretKey": "$__file{/run/secrets/host-grafana-key}"},
}


def failed(config: dict) -> list[str]:
    return [a["message"] for a in config["assertions"] if not a["assertion"]]


def health_script(config: dict, name: str) -> str:
    return config["systemd"]["services"][f"warpwatch-health-{name}"]["script"]


# --- defect 1: datasources ------------------------------------------------------------------


def test_datasources_never_collide_with_a_host_default_prometheus():
    datasources = merged(mapping())["services"]["grafana"]["provision"]["datasources"]["settings"]["datasources"]
    names = [d["name"] for d in datasources]
    # Grafana refuses two datasources of one name or two defaults: ours are neither.
    assert not {"Prometheus", "Loki"} & set(names), names
    assert all(name.startswith("warpwatch ") for name in names), names
    assert not any(d.get("isDefault") for d in datasources)


def test_datasources_follow_the_host_prometheus():
    datasources = merged(mapping(host=LIVED_IN))["services"]["grafana"]["provision"]["datasources"]["settings"]
    urls = {d["uid"]: d["url"] for d in datasources["datasources"]}
    assert urls["prometheus"] == "http://127.0.0.1:9091"


# --- defect 2: job names ----------------------------------------------------------------------


def test_host_job_named_prometheus_passes_promtool(tmp_path):
    jobs = merged(mapping())["services"]["prometheus"]["scrapeConfigs"]
    host_jobs = [{"job_name": "prometheus", "static_configs": [{"targets": ["127.0.0.1:9090"]}]}]
    write_files(tmp_path, {"prometheus.yml": yaml.safe_dump({"scrape_configs": host_jobs + jobs})})
    promtool_check_config(tmp_path / "prometheus.yml", "--syntax-only")


def test_our_jobs_keep_their_job_label_next_to_the_hosts(tmp_path):
    # A real Prometheus scraping itself twice, as the host's "prometheus" job and as ours: two
    # series with job="prometheus" (what dashboards and rules select), told apart by `stack`.
    port = free_port()
    overrides = {"services": {"prometheus": {"port": port}}, "prometheus": {"scrapeIntervalSeconds": 1}}
    jobs = merged(mapping(overrides))["services"]["prometheus"]["scrapeConfigs"]
    host_jobs = [
        {"job_name": "prometheus", "scrape_interval": "1s", "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
    ]
    server = start_prometheus(tmp_path, {"scrape_configs": host_jobs + jobs}, port)
    query = f"http://127.0.0.1:{port}/api/v1/query?query=up%7Bjob%3D%22prometheus%22%7D%3D%3D1"
    try:
        result = wait_for(
            "both prometheus jobs to be up",
            lambda: (r := json.loads(http_get(query)[1])["data"]["result"]) and len(r) == 2 and r,
            deadline=60,
            processes=[server],
        )
    finally:
        stop_process(server)
    assert sorted(series["metric"].get("stack", "") for series in result) == ["", "warpwatch"]


# --- defect 3: IPv6 ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "rendered", "probed"),
    [("::", "[::]", "[::1]"), ("2001:db8::5", "[2001:db8::5]", "[2001:db8::5]"), ("0.0.0.0", "0.0.0.0", "127.0.0.1")],
)
def test_ipv6_listen_addresses_are_bracketed(address, rendered, probed):
    config = merged(mapping(listenAddress=address))
    port = spec.PORTS["warpwatch"]
    assert config["systemd"]["services"]["warpwatch"]["environment"]["WARPWATCH_ADDR"] == f"{rendered}:{port}"
    assert f"http://{probed}:{port}{spec.HEALTH_PATHS['warpwatch']}" in health_script(config, "warpwatch")
    jobs = {job["job_name"]: job for job in config["services"]["prometheus"]["scrapeConfigs"]}
    assert jobs["warpwatch/warpwatch"]["static_configs"][0]["targets"] == [f"{probed}:{port}"]


def test_the_service_starts_on_the_rendered_ipv6_address(tmp_path, warpwatch_bin):
    port = free_port()
    config = merged(mapping({"services": {"warpwatch": {"port": port}}}, listenAddress="::1"))
    env = dict(os.environ, **config["systemd"]["services"]["warpwatch"]["environment"])
    env["WARPWATCH_DATA_DIR"] = str(tmp_path / "data")
    server = subprocess.Popen([str(warpwatch_bin)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        url = f"http://[::1]:{port}{spec.HEALTH_PATHS['warpwatch']}"
        wait_for(
            "warpwatch on [::1]",
            lambda: subprocess.run([str(warpwatch_bin), "probe", url], capture_output=True).returncode == 0,
            deadline=20,
            processes=[server],
        )
    finally:
        stop_process(server)


# --- defect 4: Alloy --------------------------------------------------------------------------


def test_a_host_alloy_on_the_shippers_port_fails_with_the_option_to_set():
    config = merged(mapping({"logShipper": "alloy"}, host={"alloy": {"enable": True, "extraFlags": []}}))
    assert any("services.warpwatch.monitoring.overrides.services.alloy.port" in m for m in failed(config))
    moved = {"alloy": {"enable": True, "extraFlags": ["--server.http.listen-addr=127.0.0.1:12346"]}}
    assert failed(merged(mapping({"logShipper": "alloy"}, host=moved))) == []


# --- defect 5: the host's Prometheus ----------------------------------------------------------


def test_prometheus_settings_a_host_has_are_defaults():
    prometheus = mapping_raw()["monitoring"]["services"]["prometheus"]
    for option in ("port", "retentionTime"):
        assert is_default(prometheus[option]), option
    # On a fresh host (the stack alone enables Prometheus) these are defaults too.
    for option in ("stateDir", "listenAddress"):
        assert is_default(guarded(prometheus[option], True)), option
    for option in ("scrape_interval", "evaluation_interval"):
        assert is_default(prometheus["globalConfig"][option]), option
    # What the stack needs is a definition of its own: on, with its jobs and rules.
    assert prometheus["enable"] is True
    assert not is_default(prometheus["scrapeConfigs"])


# --- issue 20, item 1: a host's own Prometheus keeps its data -------------------------------

# `services.prometheus.enable = true` alone, as nix/module.nix reads it back: nixpkgs' defaults.
PROMETHEUS_ALONE = {"prometheus": {"enabledByHost": True, "listenAddress": "0.0.0.0", "port": 9090}}


def test_a_prometheus_the_host_enabled_keeps_nixpkgs_state_dir_and_address():
    # A default of ours (priority 1000) beats nixpkgs' option defaults (1500): setting none is
    # how the host's TSDB (/var/lib/prometheus2) and its listen address survive.
    prometheus = merged(mapping(host=PROMETHEUS_ALONE))["services"]["prometheus"]
    assert "stateDir" not in prometheus and "listenAddress" not in prometheus, prometheus
    assert prometheus["enable"] is True and prometheus["scrapeConfigs"]
    fresh = merged(mapping())["services"]["prometheus"]
    assert fresh["stateDir"] == "prometheus" and fresh["listenAddress"] == "127.0.0.1"


def test_a_prometheus_the_host_enabled_on_every_interface_is_warned_about_and_probed_on_loopback():
    config = merged(mapping(host=PROMETHEUS_ALONE))
    assert any('services.prometheus.listenAddress = "0.0.0.0"' in w for w in config["warnings"])
    assert f"http://127.0.0.1:9090{spec.HEALTH_PATHS['prometheus']}" in health_script(config, "prometheus")


@pytest.mark.parametrize(
    ("files", "expected"),
    [(["/src/nix/module.nix"], False), (["/src/nix/module.nix", "/etc/nixos/configuration.nix"], True)],
)
def test_the_module_tells_a_host_prometheus_by_where_enable_is_defined(files, expected):
    # What nix/module.nix passes as enabledByHost: an evaluated option's winning definitions.
    option = {"definitionsWithLocations": [{"file": f, "value": True} for f in files]}
    expr = (
        "(import ./nix/stack/nixos/nixpkgs-options.nix).definedElsewhere "
        f'"/src/nix/module.nix" {nix_value(option)}'
    )
    assert nix_eval(expr) is expected


def test_host_prometheus_settings_that_matter_are_warned_about():
    warnings = merged(mapping(host=LIVED_IN))["warnings"]
    assert any('services.prometheus.listenAddress = "0.0.0.0"' in w for w in warnings)
    assert any('evaluation_interval = "1m"' in w for w in warnings)
    assert not any("services.prometheus" in w for w in merged(mapping())["warnings"])


# --- defect 7: healthchecks probe what the host binds -----------------------------------------


def test_healthchecks_probe_where_grafana_and_prometheus_listen():
    config = merged(mapping(host=LIVED_IN))
    assert f"http://10.0.0.5:3300{spec.HEALTH_PATHS['grafana']}" in health_script(config, "grafana")
    # A wildcard is probed over loopback.
    assert f"http://127.0.0.1:9091{spec.HEALTH_PATHS['prometheus']}" in health_script(config, "prometheus")
    ipv6 = merged(mapping(grafana={**SECRETS, "listenAddress": "::"}))
    assert f"http://[::1]:{spec.PORTS['grafana']}{spec.HEALTH_PATHS['grafana']}" in health_script(ipv6, "grafana")


# --- defect 8: overrides from several modules -------------------------------------------------


def test_overrides_option_merges_like_a_nixos_option():
    # The option's type, read from module.nix with a stand-in lib that names types: attrsOf
    # anything merges definitions key by key (the harness checks it with nixpkgs' real lib).
    expr = (
        "let types = { attrsOf = t: \"attrsOf \" + t; anything = \"anything\"; attrs = \"attrs\"; }; "
        "m = import ./nix/module.nix { } { config.services.warpwatch.monitoring.overrides = { }; options = { }; pkgs = { }; "
        "lib = { mkOption = o: o; inherit types; mkEnableOption = d: d; }; }; "
        "in m.options.services.warpwatch.monitoring.overrides.type"
    )
    assert nix_eval(expr) == "attrsOf anything"


# --- defect 9: monitoring without the service -------------------------------------------------


def test_monitoring_without_the_service_fails_with_the_option_to_set():
    checks = mapping(enable=False, monitoringEnable=True)["checks"]
    assert any(
        "services.warpwatch.monitoring.enable is set but services.warpwatch.enable is not" in m
        for m in failed(checks)
    )
    assert failed(mapping()["checks"]) == []
    assert failed(mapping(enable=False, monitoringEnable=False)["checks"]) == []


# --- defect 10: the host's Grafana ------------------------------------------------------------


def test_grafana_port_address_and_secrets_are_defaults():
    settings = mapping_raw()["monitoring"]["services"]["grafana"]["settings"]
    for section, option in (("server", "http_port"), ("server", "http_addr"), ("security", "secret_key")):
        assert is_default(settings[section][option]), (section, option)


def test_grafana_firewall_is_the_hosts_unless_asked_to_open_it():
    assert is_default(mapping_raw()["monitoring"]["services"]["grafana"]["openFirewall"])
    opened = mapping_raw(grafana={**SECRETS, "openFirewall": True})["monitoring"]["services"]["grafana"]
    assert opened["openFirewall"] is True


def test_a_host_secret_key_needs_no_secret_file():
    config = merged(mapping(grafana={"adminPasswordFile": SECRETS["adminPasswordFile"]}, host=LIVED_IN))
    assert failed(config) == []
    credentials = config["systemd"]["services"]["grafana"]["serviceConfig"]["LoadCredential"]
    assert credentials == [f"admin-password:{SECRETS['adminPasswordFile']}"]


def test_a_secret_file_the_host_overrides_is_warned_about():
    warnings = merged(mapping(host=LIVED_IN))["warnings"]
    assert any(
        "services.warpwatch.grafana.secretKeyFile is not used: this host sets "
        "services.grafana.settings.security.secret_key" in w
        for w in warnings
    )


# --- also: file limit, Grafana's downloads ----------------------------------------------------


def test_warpwatch_may_hold_far_more_than_1024_connections():
    assert merged(mapping())["systemd"]["services"]["warpwatch"]["serviceConfig"]["LimitNOFILE"] > 1024


def test_grafana_downloads_nothing_at_start():
    settings = merged(mapping())["services"]["grafana"]["settings"]
    assert settings["plugins"]["preinstall_disabled"] is True
    assert settings["analytics"]["check_for_plugin_updates"] is False
    assert settings["analytics"]["check_for_updates"] is False


def test_unit_names_are_exported_for_the_vm_test():
    names = nix_eval('(import ./nix/stack { overrides.logShipper = "alloy"; }).nixos.unitNames')
    assert names["alloy"] == "warpwatch-alloy" and names["prometheus"] == "prometheus"
    assert FAKE["alloy"] in merged(mapping({"logShipper": "alloy"}))["systemd"]["services"]["warpwatch-alloy"][
        "serviceConfig"
    ]["ExecStart"]



# --- issue 20, item 2: configuration changes reload Prometheus -------------------------------


def test_prometheus_reloads_on_a_changed_configuration_unless_the_host_says_otherwise():
    # nixpkgs' enableReload (default false) adds ExecReload and the prometheus-config-reload unit
    # that nixos-rebuild reloads when the configuration changes; tests/systemd runs them.
    prometheus = mapping_raw()["monitoring"]["services"]["prometheus"]
    assert is_default(prometheus["enableReload"]) and prometheus["enableReload"]["content"] is True
