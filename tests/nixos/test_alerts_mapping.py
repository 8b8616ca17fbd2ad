"""Issue 17 on NixOS: Alertmanager and the node exporter through nixpkgs' modules, mapped offline
from nix/stack/nixos/alertmanager.nix and node-exporter.nix; receiver secrets as systemd
credentials; a lived-in host's own Alertmanager and node exporter kept."""

import json

from tests import spec
from tests.conftest import nix_eval, nix_value
from tests.nixos.helpers import is_default, mapping, mapping_raw, merged

RECEIVERS = {
    "alerts": {
        "receivers": {
            "oncall": {"webhook": {"urlFile": "/etc/warpwatch/oncall-url"}},
            "mail": {
                "email": {
                    "smarthost": "smtp.example.org:587",
                    "from": "alerts@example.org",
                    "to": "ops@example.org",
                    "authUsername": "alerts",
                    "authPasswordFile": "/etc/warpwatch/smtp-password",
                }
            },
        },
        "defaultReceiver": "mail",
        "pagingReceiver": "oncall",
    }
}
CREDENTIALS = "/run/credentials/alertmanager.service"


def failed(config: dict) -> list[str]:
    return [a["message"] for a in config["assertions"] if not a["assertion"]]


def rendered_host_config(overrides: dict) -> dict:
    return nix_eval(f'(import ./nix/stack {{ overrides = {nix_value(overrides)}; }}).configs.alertmanager {{ target = "host"; }}')


def test_alertmanager_runs_the_rendered_configuration_on_loopback():
    config = merged(mapping(RECEIVERS))
    am = config["services"]["prometheus"]["alertmanager"]
    assert am["enable"] is True
    assert am["configuration"] == rendered_host_config(RECEIVERS)
    assert (am["listenAddress"], am["port"]) == (spec.LOOPBACK, spec.PORTS["alertmanager"])
    assert am["extraFlags"] == ["--cluster.listen-address="]
    unit = config["systemd"]["services"]["alertmanager"]["serviceConfig"]
    assert unit["MemoryMax"] == f"{spec.MEMORY_MIB['alertmanager']}M"
    assert unit["NoNewPrivileges"] is True and unit["CapabilityBoundingSet"] == ""
    assert failed(config) == [] and not any("no alert receiver" in w for w in config["warnings"])


def test_the_host_may_override_our_configuration_address_and_port():
    raw = mapping_raw(RECEIVERS)["monitoring"]["services"]["prometheus"]["alertmanager"]
    for key in ("configuration", "listenAddress", "port"):
        assert is_default(raw[key]), key


def test_receiver_secrets_are_credentials_never_in_the_configuration():
    config = merged(mapping(RECEIVERS))
    unit = config["systemd"]["services"]["alertmanager"]["serviceConfig"]
    assert sorted(unit["LoadCredential"]) == [
        "alertmanager-mail-smtp-password:/etc/warpwatch/smtp-password",
        "alertmanager-oncall-webhook-url:/etc/warpwatch/oncall-url",
    ]
    am = config["services"]["prometheus"]["alertmanager"]["configuration"]
    receivers = {r["name"]: r for r in am["receivers"]}
    assert receivers["oncall"]["webhook_configs"][0]["url_file"] == f"{CREDENTIALS}/alertmanager-oncall-webhook-url"
    assert receivers["mail"]["email_configs"][0]["auth_password_file"] == f"{CREDENTIALS}/alertmanager-mail-smtp-password"
    # nixpkgs runs the configuration through envsubst: no `$` it would eat.
    assert "$" not in json.dumps(am)


def test_no_receiver_is_a_warning_not_silence():
    config = merged(mapping())
    warnings = [w for w in config["warnings"] if "no alert receiver is declared" in w]
    assert len(warnings) == 1 and "alerts.receivers" in warnings[0] and "warpwatch-no-receiver-declared" in warnings[0]
    assert config["services"]["prometheus"]["alertmanager"]["configuration"]["receivers"] == [
        {"name": "warpwatch-no-receiver-declared"}
    ]


def test_prometheus_sends_alerts_to_the_alertmanager_and_scrapes_both():
    config = merged(mapping())
    prometheus = config["services"]["prometheus"]
    assert prometheus["alertmanagers"] == [
        {"static_configs": [{"targets": [f"{spec.LOOPBACK}:{spec.PORTS['alertmanager']}"]}]}
    ]
    targets = {j["static_configs"][0]["labels"]["job"]: j["static_configs"][0]["targets"] for j in prometheus["scrapeConfigs"]}
    assert targets["alertmanager"] == [f"{spec.LOOPBACK}:{spec.PORTS['alertmanager']}"]
    assert targets["node-exporter"] == [f"{spec.LOOPBACK}:{spec.PORTS['node-exporter']}"]
    # The `service` label survives the mapping's own job names and static configs.
    for job in prometheus["scrapeConfigs"]:
        assert job["relabel_configs"] == [{"target_label": "service", "replacement": job["static_configs"][0]["labels"]["job"]}]


def test_node_exporter_runs_nixpkgs_unit_on_loopback_with_its_limit():
    config = merged(mapping())
    node = config["services"]["prometheus"]["exporters"]["node"]
    assert node == {"enable": True, "listenAddress": spec.LOOPBACK, "port": spec.PORTS["node-exporter"]}
    unit = config["systemd"]["services"]["prometheus-node-exporter"]["serviceConfig"]
    assert unit["MemoryMax"] == f"{spec.MEMORY_MIB['node-exporter']}M"
    assert "warpwatch-health-node-exporter" in config["systemd"]["timers"]
    raw = mapping_raw()["monitoring"]["services"]["prometheus"]["exporters"]["node"]
    assert is_default(raw["listenAddress"]) and is_default(raw["port"])


# A lived-in host: its own Alertmanager and node exporter, as nix/module.nix reads them back.
HOST_ALERTMANAGER = {
    "listenAddress": "",
    "port": 9193,
    "configuration": {"route": {"receiver": "pager"}, "receivers": [{"name": "pager"}]},
    "configText": None,
}


def test_a_host_alertmanager_keeps_its_configuration_and_gets_the_stacks_alerts():
    config = merged(mapping(host={"alertmanager": HOST_ALERTMANAGER}))
    assert failed(config) == []
    assert config["services"]["prometheus"]["alertmanagers"] == [{"static_configs": [{"targets": [f"{spec.LOOPBACK}:9193"]}]}]
    # Ours would send nowhere, but the host's configuration routes them: no warning then.
    assert not any("no alert receiver" in w for w in config["warnings"])


def test_a_host_alertmanager_and_stack_receivers_cannot_coexist():
    config = merged(mapping(RECEIVERS, host={"alertmanager": HOST_ALERTMANAGER}))
    (message,) = failed(config)
    assert message.startswith("services.prometheus.alertmanager.configuration is this host's own")
    assert "alerts.receivers: mail, oncall" in message and "drop alerts.receivers" in message
    text = merged(mapping(RECEIVERS, host={"alertmanager": {**HOST_ALERTMANAGER, "configText": "route: {}\n"}}))
    assert failed(text)[0].startswith("services.prometheus.alertmanager.configText is this host's own")


def test_a_host_node_exporter_is_scraped_where_it_listens():
    config = merged(mapping(host={"nodeExporter": {"listenAddress": "0.0.0.0", "port": 9200}}))
    jobs = {j["static_configs"][0]["labels"]["job"]: j for j in config["services"]["prometheus"]["scrapeConfigs"]}
    assert jobs["node-exporter"]["static_configs"][0]["targets"] == [f"{spec.LOOPBACK}:9200"]


def test_receiver_secret_options_are_strings_so_a_path_is_refused_not_copied():
    # The options' types, read from module.nix with a stand-in lib that names types (the harness
    # of the maintainers checks the module with nixpkgs' real lib): a secret file is `nullOr str`,
    # so a path literal is a type error rather than a copy into the store; a route's severity is
    # one of the declaration's.
    expr = (
        "let types = { attrsOf = t: { attrsOf = t; }; anything = \"anything\"; attrs = \"attrs\"; str = \"str\"; "
        "bool = \"bool\"; port = \"port\"; package = \"package\"; nullOr = t: { nullOr = t; }; listOf = t: { listOf = t; }; "
        "enum = values: { enum = values; }; submodule = m: m.options; }; "
        "m = import ./nix/module.nix { } { config.services.warpwatch.monitoring.overrides = { }; options = { }; pkgs = { }; "
        "lib = { mkOption = o: o; inherit types; mkEnableOption = d: d; literalExpression = t: t; literalMD = t: t; }; }; "
        "a = m.options.services.warpwatch.monitoring.alerts; receiver = a.receivers.type.attrsOf; "
        "in { webhook = receiver.webhook.type.nullOr.urlFile.type; email = receiver.email.type.nullOr.authPasswordFile.type; "
        "severity = a.routes.type.listOf.severity.type; }"
    )
    assert nix_eval(expr) == {
        "webhook": {"nullOr": "str"},
        "email": {"nullOr": "str"},
        "severity": {"nullOr": {"enum": list(spec.SEVERITIES)}},
    }
