"""Every NixOS option path the mapping sets is listed, with its source module, in the comment at
the top of nix/stack/nixos/default.nix (checked by hand against the nixos-26.05 modules and, for
the option tree of nixpkgs master, against master's), and every listed path is really used by one
of the two shapes. A new option in the mapping without a checked source fails here."""

import re

import pytest

from tests.conftest import ROOT
from tests.nixos.helpers import AGENT, RECEIVING, mapping, merged

# Attribute-set options whose keys are user-chosen names (units, files), not option names.
NAMED = {("systemd", "services"), ("systemd", "timers"), ("environment", "etc")}


def listed_paths() -> dict[str, bool]:
    """{path: freeform} from the comment block; `<name>` stands for a user-chosen name."""
    paths = {}
    for line in (ROOT / "nix" / "stack" / "nixos" / "default.nix").read_text().splitlines():
        match = re.match(r"#   ((?:[a-zA-Z_]+|<name>)(?:\.(?:[a-zA-Z_]+|<name>))*)(?:, ([a-zA-Z.]+))?( \(\*\))?\s+\S+\.nix$", line)
        if match:
            paths[match.group(1)] = bool(match.group(3))
            if match.group(2):
                paths[match.group(2)] = False
    return paths


def set_paths(value, prefix=(), listed=None) -> set[str]:
    """Option paths of a mapped configuration: descend until a listed leaf or freeform option."""
    dotted = ".".join(prefix)
    if dotted in listed:
        return {dotted}
    if prefix[-2:] in NAMED:
        # prefix ends with the named-set option itself: its keys are names.
        return set().union(*(set_paths(v, prefix + ("<name>",), listed) for v in value.values())) if value else set()
    if isinstance(value, dict):
        # An empty set defines no option (an agent's services.loki and services.grafana).
        return set().union(*(set_paths(v, prefix + (k,), listed) for k, v in value.items()))
    return {dotted}


# nixos-26.05's option tree, and nixpkgs master's (nix/stack/nixos/nixpkgs-options.nix).
SHAPES = [{}, {"nixpkgsShape": {"prometheusSettings": True, "journaldSettings": True}}]


# Every role the mapping renders: a server with either shipper, a receiving server, an agent.
CONFIGURATIONS = {
    "promtail": {"logShipper": "promtail"},
    "alloy": {"logShipper": "alloy"},
    "receiving": RECEIVING,
    "agent": AGENT,
}


@pytest.mark.parametrize("shape", SHAPES, ids=["nixos-26.05", "master"])
@pytest.mark.parametrize("configuration", CONFIGURATIONS)
def test_every_set_option_path_is_listed_with_its_source(configuration, shape):
    listed = listed_paths()
    assert len(listed) > 20, "the option list in nix/stack/nixos/default.nix was not found"
    config = merged(mapping(CONFIGURATIONS[configuration], **shape))
    used = set_paths(config, (), listed)
    unlisted = sorted(used - listed.keys())
    assert unlisted == [], f"option paths set by the mapping but not listed with a source: {unlisted}"


def test_every_listed_path_is_used():
    listed = listed_paths()
    used = set()
    for overrides in CONFIGURATIONS.values():
        for shape in SHAPES:
            used |= set_paths(merged(mapping(overrides, **shape)), (), listed)
    assert sorted(listed.keys() - used) == []


def test_removed_promtail_module_is_not_used():
    for shipper in ("promtail", "alloy"):
        assert "promtail" not in merged(mapping({"logShipper": shipper}))["services"]
