"""flake.lock and flake.nix's inputs: lock format 7, pinned to the real revisions of the pins file,
and exactly the inputs flake.nix declares (a mismatch makes Nix rewrite the lock on first use)."""

import json
import re
import subprocess

import pytest

from tests.conftest import ROOT, nix_eval, require_tool

# The specification: the real github:NixOS/nixpkgs lock entries of the project's pins file
# (../shared/reference/nixpkgs-pins.json, read from public flake.lock files), nixos-26.05 for
# everything and nixos-25.11 for Promtail. Copied so the test runs from a clean checkout.
EXPECTED_NODES = {
    "nixpkgs": {
        "locked": {
            "lastModified": 1787204541,
            "narHash": "sha256-OURZPknrTjQrlNyxPdqzyqmU/81Wes1CUP/Ft1Rv/YI=",
            "owner": "NixOS",
            "repo": "nixpkgs",
            "rev": "5880666fd9eb563038431edb35c2d0aa595884e6",
            "type": "github",
        },
        "original": {"owner": "NixOS", "ref": "nixos-26.05", "repo": "nixpkgs", "type": "github"},
    },
    "nixpkgs-promtail": {
        "locked": {
            "lastModified": 1776734388,
            "narHash": "sha256-vl3dkhlE5gzsItuHoEMVe+DlonsK+0836LIRDnm6MXQ=",
            "owner": "nixos",
            "repo": "nixpkgs",
            "rev": "10e7ad5bbcb421fe07e3a4ad53a634b0cd57ffac",
            "type": "github",
        },
        "original": {"owner": "nixos", "ref": "nixos-25.11", "repo": "nixpkgs", "type": "github"},
    },
}


@pytest.fixture(scope="module")
def lock():
    return json.loads((ROOT / "flake.lock").read_text())


@pytest.fixture(scope="module")
def inputs():
    return nix_eval("(import ./flake.nix).inputs")


def parse_github_url(url: str) -> dict:
    m = re.fullmatch(r"github:([^/]+)/([^/]+)/([^/?]+)", url)
    assert m, f"unexpected flake input url {url!r}"
    return {"type": "github", "owner": m[1], "repo": m[2], "ref": m[3]}


def test_lock_is_version_7_with_a_root_node(lock):
    assert lock["version"] == 7
    assert lock["root"] == "root"
    assert set(lock["nodes"]) == {"root", *lock["nodes"]["root"]["inputs"].values()}


def test_locked_nodes_are_the_pinned_revisions(lock):
    for name, expected in EXPECTED_NODES.items():
        node = lock["nodes"][name]
        assert node["locked"] == expected["locked"], name
        assert node["original"] == expected["original"], name
        assert re.fullmatch(r"[0-9a-f]{40}", node["locked"]["rev"])
        assert node["locked"]["narHash"].startswith("sha256-")


def test_flake_inputs_are_exactly_the_locked_ones(lock, inputs):
    root_inputs = lock["nodes"]["root"]["inputs"]
    assert set(inputs) == set(root_inputs), "flake.nix inputs and flake.lock root inputs differ"
    for name, spec in inputs.items():
        assert set(spec) == {"url"}, f"input {name}: only a url is expected (no follows, no flake = false)"
        assert parse_github_url(spec["url"]) == lock["nodes"][root_inputs[name]]["original"], name


def test_nixpkgs_is_the_current_stable_and_promtail_the_last_branch_shipping_it(inputs):
    assert inputs["nixpkgs"]["url"].endswith("/nixos-26.05")
    assert inputs["nixpkgs-promtail"]["url"].endswith("/nixos-25.11")


def test_the_promtail_input_is_used_for_promtail_alone():
    # Every use of the second nixpkgs in flake.nix is a `.promtail` attribute.
    parsed = subprocess.run(
        [require_tool("nix-instantiate"), "--parse", str(ROOT / "flake.nix")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    accesses = re.findall(r'\(nixpkgs-promtail\)((?:\.(?:"[^"]*"|[\w-]+))*)', parsed)
    assert accesses, "nixpkgs-promtail is never used"
    for access in accesses:
        assert access.endswith(".promtail"), f"nixpkgs-promtail used for something else: {access}"


def test_no_flake_utils_or_other_inputs(inputs):
    assert sorted(inputs) == ["nixpkgs", "nixpkgs-promtail"]
