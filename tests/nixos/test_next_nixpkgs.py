"""The mapping on both option trees nixpkgs declares (issue 20, item 6): nixos-26.05's
(services.prometheus.globalConfig ..., services.journald.extraConfig) and nixpkgs master's, where
Prometheus' options moved under `settings` (the old names warn) and journald's extraConfig is
removed (any definition fails evaluation). nix/module.nix picks the shape from the evaluated
`options` (nix/stack/nixos/nixpkgs-options.nix); here both are evaluated offline."""


import pytest
import yaml

from tests.conftest import nix_eval, nix_value, write_files
from tests.nixos.helpers import is_default, mapping, mapping_raw, merged, promtool_check_config

OPTIONS = "(import ./nix/stack/nixos/nixpkgs-options.nix)"
NEXT = {"prometheusSettings": True, "journaldSettings": True}
# Option names master keeps only as renamed/removed aliases: a definition warns or fails.
OLD_PROMETHEUS = {"globalConfig", "scrapeConfigs", "ruleFiles", "rules", "alertmanagers", "retentionTime"}


def test_the_shape_is_read_from_the_evaluated_options():
    # Master still declares the old names (as aliases): `settings` is what tells them apart.
    old = {"services": {"prometheus": {"globalConfig": {}, "rules": {}}, "journald": {"extraConfig": {}}}}
    new = {
        "services": {
            "prometheus": {"globalConfig": {}, "settings": {}},
            "journald": {"extraConfig": {}, "settings": {"Journal": {}}},
        }
    }
    assert nix_eval(f"{OPTIONS}.shapeOf {nix_value(old)}") == nix_eval(f"{OPTIONS}.nixos2605")
    assert nix_eval(f"{OPTIONS}.shapeOf {nix_value(new)}") == NEXT == nix_eval(f"{OPTIONS}.settingsShape")


def test_on_master_prometheus_is_set_through_settings_only():
    prometheus = merged(mapping(nixpkgsShape=NEXT))["services"]["prometheus"]
    assert not OLD_PROMETHEUS & prometheus.keys(), sorted(OLD_PROMETHEUS & prometheus.keys())
    settings = prometheus["settings"]
    declared = merged(mapping())["services"]["prometheus"]
    assert settings["scrape_configs"] == declared["scrapeConfigs"]
    assert settings["rule_files"] == declared["ruleFiles"]
    assert settings["global"] == declared["globalConfig"]
    assert settings["storage"] == {"tsdb": {"retention": {"time": declared["retentionTime"]}}}


def test_on_master_what_a_host_keeps_its_own_value_for_is_still_a_default():
    settings = mapping_raw(nixpkgsShape=NEXT)["monitoring"]["services"]["prometheus"]["settings"]
    assert is_default(settings["storage"]["tsdb"]["retention"]["time"])
    assert all(is_default(value) for value in settings["global"].values())


def test_on_master_the_generated_prometheus_config_passes_promtool(tmp_path):
    # What nixpkgs master writes (yaml of `settings`), with the rule file in place.
    config = merged(mapping(nixpkgsShape=NEXT))["services"]["prometheus"]["settings"]
    rules = nix_eval("(import ./nix/stack { }).configs.rules")
    # storage.tsdb.retention in the config file is newer than Debian's promtool (2.42); its value
    # is checked above.
    checked = {key: value for key, value in config.items() if key != "storage"}
    checked["rule_files"] = [str(tmp_path / "rules.yml")]
    write_files(tmp_path, {"prometheus.yml": yaml.safe_dump(checked), "rules.yml": rules})
    report = promtool_check_config(tmp_path / "prometheus.yml")
    assert "SUCCESS" in report and "rules found" in report, report


def test_on_master_journal_limits_are_per_key_defaults_and_extra_config_is_never_set():
    raw = mapping_raw(nixpkgsShape=NEXT)["service"]["services"]["journald"]
    assert "extraConfig" not in raw
    assert raw["settings"]["Journal"] and all(is_default(v) for v in raw["settings"]["Journal"].values())
    old = merged(mapping())["services"]["journald"]["extraConfig"]
    new = merged(mapping(nixpkgsShape=NEXT))["services"]["journald"]["settings"]["Journal"]
    assert dict(line.split("=", 1) for line in old.splitlines()) == new


def test_host_journal_settings_are_read_without_touching_a_removed_extra_config():
    removed = '{ extraConfig = throw "removed"; settings.Journal = { SystemMaxUse = "2G"; }; }'
    assert nix_eval(f"{OPTIONS}.journaldSettings {OPTIONS}.settingsShape {removed}") == {"SystemMaxUse": "2G"}
    lines = '{ extraConfig = "ForwardToConsole=yes\\n SystemMaxUse = 1G\\n"; }'
    assert nix_eval(f"{OPTIONS}.journaldSettings {OPTIONS}.nixos2605 {lines}") == {
        "ForwardToConsole": "yes",
        "SystemMaxUse": "1G",
    }


@pytest.mark.parametrize(
    ("shape", "option"),
    [({}, "services.journald.extraConfig"), ({"nixpkgsShape": NEXT}, "services.journald.settings.Journal")],
)
def test_a_host_journal_without_a_total_cap_names_the_option_of_its_nixpkgs(shape, option):
    warnings = merged(mapping(host={"journal": {"ForwardToConsole": "yes"}}, **shape))["warnings"]
    assert any(w.startswith(f"{option} is set on this host without SystemMaxUse=") for w in warnings), warnings


def test_the_evaluation_interval_warning_names_the_option_of_its_nixpkgs():
    host = {"prometheus": {"evaluationInterval": "1m"}}
    on_master = merged(mapping(host=host, nixpkgsShape=NEXT))["warnings"]
    assert any("services.prometheus.settings.global.evaluation_interval" in w for w in on_master), on_master
    on_2605 = merged(mapping(host=host))["warnings"]
    assert any("services.prometheus.globalConfig.evaluation_interval" in w for w in on_2605), on_2605
