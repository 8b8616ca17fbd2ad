"""Prometheus' unit as nixpkgs renders it from the mapping's values (tests/nixos/nixpkgs_units.py),
running Debian's real prometheus under a real systemd 252 (issue 20, item 2): a changed
configuration is applied the way nixos-rebuild switch applies it, by reloading
prometheus-config-reload (reloadIfChanged), which reloads Prometheus: same process, new targets.
Without `services.prometheus.enableReload` nixpkgs renders no ExecReload, and systemd refuses
the reload ("Job type reload is not applicable")."""

import json
import shutil
from pathlib import Path

import pytest
import yaml

from tests.conftest import nix_eval, require_tool
from tests.nixos.helpers import SYSTEM_FAKE, mapping, mapping_raw
from tests.nixos.nixpkgs_units import nixpkgs_prometheus
from tests.systemd.helpers import Machine

PACKAGE = "/nix/store/99999999999999999999999999999999-prometheus"
ADDED_JOB = "host/added-after-start"


def prometheus_config(store, extra_jobs=()) -> str:
    """prometheus.yml as nixpkgs generates it from the mapping's values, the rule file stored."""
    options = mapping()["monitoring"]["services"]["prometheus"]
    rules = store.add("warpwatch-rules.yml", "warpwatch-rules.yml", nix_eval("(import ./nix/stack { }).configs.rules"))
    config = {
        "global": options["globalConfig"],
        "rule_files": [rules],
        "scrape_configs": options["scrapeConfigs"] + list(extra_jobs),
    }
    return yaml.safe_dump(config)


def rendered(box: Machine, config_text: str) -> dict:
    options = mapping()["monitoring"]["services"]["prometheus"]
    ours = mapping_raw()["monitoring"]["systemd"]["services"]["prometheus"]["serviceConfig"]
    packages = {name: SYSTEM_FAKE[name] for name in ("bash", "systemd", "coreutils", "gnugrep")}
    return nixpkgs_prometheus(options, ours, config_text, box.store, packages, PACKAGE)


@pytest.fixture(scope="module")
def box(dockerd, warpwatch_bin, tmp_path_factory):
    diagnostics = ("systemctl status --no-pager prometheus.service", "journalctl -b -n 30 --no-pager")
    machine = Machine(dockerd, tmp_path_factory.mktemp("prometheus"), warpwatch_bin, diagnostics)
    binary = machine.store.directory / Path(PACKAGE).name / "bin" / "prometheus"
    binary.parent.mkdir(parents=True)
    shutil.copy2(require_tool("prometheus"), binary)  # Debian's, linked against libc only
    machine.boot()
    machine.sh("useradd --system --no-create-home --shell /usr/sbin/nologin prometheus")
    yield machine
    dockerd.run(["rm", "-f", machine.name])


def api(box: Machine, path: str) -> dict:
    port = mapping()["monitoring"]["services"]["prometheus"]["port"]
    return json.loads(box.sh(f"curl -sf http://127.0.0.1:{port}{path}").stdout)


def test_a_changed_configuration_is_applied_by_a_reload_of_the_same_process(box):
    box.install(rendered(box, prometheus_config(box.store)))
    box.sh("systemctl start prometheus.service")
    ready = "curl -sf http://127.0.0.1:9090/-/ready"
    box.wait("Prometheus to be ready", lambda: box.sh(ready, check=False).returncode == 0, deadline=60)
    pid = box.show("prometheus.service", "MainPID")
    assert pid not in ("", "0")
    assert box.show("prometheus-config-reload.service", "ActiveState") == "active", (
        "nixpkgs' prometheus-config-reload unit is not there: services.prometheus.enableReload is off"
    )

    # nixos-rebuild switch: the new /etc file and units in place, then a reload of each
    # reloadIfChanged unit whose unit file changed (its restart trigger names the new config).
    added = {"job_name": ADDED_JOB, "static_configs": [{"targets": ["127.0.0.1:9"]}]}
    box.install(rendered(box, prometheus_config(box.store, [added])))
    switch = box.sh("systemctl reload prometheus-config-reload.service", check=False, timeout=90)
    assert switch.returncode == 0, switch.stdout + switch.stderr

    # Service discovery hands the new target group to the scrape manager within seconds.
    box.wait(
        f"the job {ADDED_JOB} among Prometheus' targets",
        lambda: ADDED_JOB in {t["scrapePool"] for t in api(box, "/api/v1/targets")["data"]["activeTargets"]},
    )
    assert box.show("prometheus.service", "MainPID") == pid, "Prometheus was restarted, not reloaded"
    assert box.show("prometheus.service", "NRestarts") == "0"

    # An operator's `systemctl reload prometheus` works as well (it was refused before).
    direct = box.sh("systemctl reload prometheus.service", check=False, timeout=90)
    assert direct.returncode == 0, direct.stdout + direct.stderr
    assert box.show("prometheus.service", "MainPID") == pid
