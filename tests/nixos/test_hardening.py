"""The warpwatch unit as the mapping defines it, rendered to a unit file and judged by
`systemd-analyze security --offline=true` (systemd's own exposure score)."""

import re
import subprocess
from pathlib import Path

import pytest

from conftest import require_tool
from nixos_helpers import mapping, warpwatch_package, write_unit

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
