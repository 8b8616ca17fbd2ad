"""Every long-running unit of the stack as the mapping defines it (merged with what nixpkgs' own
module sets, for the units it shares), rendered to a unit file and judged by
`systemd-analyze security --offline=true` (systemd's own exposure score)."""

import re
import subprocess
from pathlib import Path

import pytest

from tests.conftest import require_tool
from tests.nixos.helpers import AGENT, RECEIVING, is_default, mapping, mapping_raw, warpwatch_package, write_unit
from tests.nixos.nixpkgs_units import NIXPKGS_SERVICE_CONFIG, merge_unit

MAX_EXPOSURE = 2.0


def exposure(unit_file: Path) -> float:
    proc = subprocess.run(
        [require_tool("systemd-analyze"), "security", "--offline=true", "--no-pager", str(unit_file)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    match = re.search(r"Overall exposure level for \S+: (\d+\.\d+)", proc.stdout)
    assert match, f"no exposure level in systemd-analyze output:\n{proc.stdout}\n{proc.stderr}"
    return float(match.group(1))


@pytest.fixture()
def package(tmp_path: Path, warpwatch_bin: Path) -> Path:
    # ExecStart points at a real executable, as it would on the host.
    return warpwatch_package(tmp_path, warpwatch_bin)


def test_warpwatch_unit_exposure_is_at_most_two(tmp_path, package):
    unit = mapping(warpwatch=str(package))["service"]["systemd"]["services"]["warpwatch"]
    score = exposure(write_unit(tmp_path, "warpwatch", unit))
    assert score <= MAX_EXPOSURE, f"exposure {score} > {MAX_EXPOSURE}"


def test_the_score_reacts_to_hardening(tmp_path, package):
    # The same unit without its sandbox must score far worse: the check measures something real.
    unit = mapping(warpwatch=str(package))["service"]["systemd"]["services"]["warpwatch"]
    kept = {"ExecStart", "MemoryMax", "LogNamespace", "StateDirectory", "WorkingDirectory", "Restart", "RestartSec"}
    unit["serviceConfig"] = {k: v for k, v in unit["serviceConfig"].items() if k in kept}
    assert exposure(write_unit(tmp_path, "warpwatch", unit)) > 5.0


def test_required_hardening_directives(package):
    config = mapping(warpwatch=str(package))["service"]["systemd"]["services"]["warpwatch"]["serviceConfig"]
    assert config["DynamicUser"] is True
    assert config["ProtectSystem"] == "strict"
    assert config["NoNewPrivileges"] is True
    assert config["PrivateTmp"] is True
    assert config["CapabilityBoundingSet"] == ""
    assert config["SystemCallFilter"] == ["@system-service", "~@privileged", "~@resources"]


@pytest.mark.parametrize("name", sorted(NIXPKGS_SERVICE_CONFIG))
def test_units_shared_with_nixpkgs_score_at_most_two(tmp_path, name):
    ours = mapping_raw()["monitoring"]["systemd"]["services"][name]["serviceConfig"]
    unit = {"description": name, "serviceConfig": merge_unit(NIXPKGS_SERVICE_CONFIG[name], ours)}
    unit["serviceConfig"]["ExecStart"] = "/bin/true"
    score = exposure(write_unit(tmp_path, name, unit))
    assert score <= MAX_EXPOSURE, f"{name}: exposure {score} > {MAX_EXPOSURE}"


def test_the_shared_sandbox_is_what_lowers_loki(tmp_path):
    # nixpkgs' Loki unit alone: the score the issue measured, far above the target.
    unit = {"description": "loki", "serviceConfig": dict(NIXPKGS_SERVICE_CONFIG["loki"], ExecStart="/bin/true")}
    assert exposure(write_unit(tmp_path, "loki", unit)) > 5.0


@pytest.mark.parametrize("shipper", ["promtail", "alloy"])
def test_shipper_unit_scores_at_most_two(tmp_path, shipper):
    unit = mapping({"logShipper": shipper})["monitoring"]["systemd"]["services"][f"warpwatch-{shipper}"]
    unit["serviceConfig"]["ExecStart"] = "/bin/true"
    score = exposure(write_unit(tmp_path, shipper, unit))
    assert score <= MAX_EXPOSURE, f"{shipper}: exposure {score} > {MAX_EXPOSURE}"


def test_sandbox_of_shared_units_is_a_default():
    # nixpkgs' own values (Grafana's AF_UNIX, its capability below port 1024) and the host's win.
    config = mapping_raw()["monitoring"]["systemd"]["services"]["grafana"]["serviceConfig"]
    assert is_default(config["ProtectSystem"]) and config["ProtectSystem"]["content"] == "strict"


# Many hosts (issue 18): the receiver, and the agent's collector and shipper with their credentials.
def test_receiver_unit_scores_at_most_two(tmp_path):
    unit = mapping(RECEIVING)["monitoring"]["systemd"]["services"]["warpwatch-receiver"]
    unit["serviceConfig"]["ExecStart"] = "/bin/true"
    score = exposure(write_unit(tmp_path, "warpwatch-receiver", unit))
    print(f"\nwarpwatch-receiver.service: exposure {score}")
    assert score <= MAX_EXPOSURE, f"warpwatch-receiver: exposure {score} > {MAX_EXPOSURE}"


@pytest.mark.parametrize("shipper", ["promtail", "alloy"])
def test_agent_units_score_at_most_two(tmp_path, shipper):
    overrides = {**AGENT, "logShipper": shipper}
    ours = mapping_raw(overrides)["monitoring"]["systemd"]["services"]
    collector = {"description": "collector", "serviceConfig": merge_unit(NIXPKGS_SERVICE_CONFIG["prometheus"], ours["prometheus"]["serviceConfig"])}
    units = {"prometheus": collector, f"warpwatch-{shipper}": mapping(overrides)["monitoring"]["systemd"]["services"][f"warpwatch-{shipper}"]}
    for name, unit in units.items():
        unit["serviceConfig"]["ExecStart"] = "/bin/true"
        score = exposure(write_unit(tmp_path, name, unit))
        print(f"\nagent {name}.service: exposure {score}")
        assert score <= MAX_EXPOSURE, f"agent {name}: exposure {score} > {MAX_EXPOSURE}"
