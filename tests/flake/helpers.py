"""Helpers for the flake tests: the pure parts of the flake evaluated offline with stand-in
package versions and store paths (what nixpkgs would pass), and the two `nix run` scripts."""

from pathlib import Path

from tests.conftest import ROOT, nix_eval, nix_value, require_tool

NIX = ROOT / "nix"
STACK_APP = NIX / "stack-app.sh"
RUN_APP = NIX / "run-app.sh"

# flake.nix's outputs, called with the stand-in nixpkgs of fake-nixpkgs.nix for both inputs.
OUTPUTS = (
    "let flake = import ./flake.nix; "
    "self = flake.outputs { inherit self; "
    'nixpkgs = import ./tests/flake/fake-nixpkgs.nix "26.05"; '
    'nixpkgs-promtail = import ./tests/flake/fake-nixpkgs.nix "25.11"; }; in self'
)

# Versions as nixpkgs could report them; grafana's "+" is not allowed in a Docker tag.
FAKE_VERSIONS = {
    "warpwatch": "0.1.0",
    "prometheus": "3.14.0",
    "loki": "3.7.8",
    "promtail": "3.6.11",
    "alloy": "1.12.1",
    "grafana": "12.4.0+security-01",
    "alertmanager": "0.28.1",
    "node-exporter": "1.9.1",
}


def specs_expr(overrides: str = "{ }", versions: dict[str, str] = FAKE_VERSIONS, role: str = "server") -> str:
    packages = {
        name: {"version": v, "path": f"/nix/store/00000000000000000000000000000000-{name}-{v}"}
        for name, v in versions.items()
    }
    return f'(import ./nix/stack/image-specs.nix {{ packages = {nix_value(packages)}; overrides = {overrides}; role = "{role}"; }})'


def eval_specs(attr: str, overrides: str = "{ }", versions: dict[str, str] = FAKE_VERSIONS, role: str = "server"):
    """Evaluate `<specs>.<attr>` (attr may be a longer path or a Nix function applied to it);
    `role` "agent": the specs of `nix run .#agent`."""
    return nix_eval(f"let specs = {specs_expr(overrides, versions, role)}; in {attr}")


def stack_app_env(overrides: str = "{ }") -> dict:
    """The environment nix/stack-app.nix gives `nix run .#stack` for a server declared with
    `overrides` (the stand-in nixpkgs' tools, images at stand-in paths)."""
    return nix_eval(
        f"let pkgs = (import ./tests/flake/fake-nixpkgs.nix \"26.05\").legacyPackages.x86_64-linux; "
        f"specs = {specs_expr(overrides)}; "
        "app = import ./nix/stack-app.nix { inherit (pkgs) lib acl coreutils docker-client docker-compose "
        "gnugrep linkFarm util-linux writeShellApplication writeText; inherit specs; "
        "images = pkgs.lib.genAttrs specs.composeServices (name: \"/images/${name}\"); }; "
        "in app.stack-app.runtimeEnv"
    )


def declaration():
    """The declaration as the stack reads it (no overrides), not its renderings: for wiring checks
    of values the issue does not fix (image names, uids, start periods). Required numbers come
    from tests/spec.py."""
    return nix_eval("(import ./nix/stack { }).stack")


def tool_dir(tmp: Path, tools: list[str]) -> Path:
    """A PATH directory holding only `tools` (symlinks to the real ones): lets a test decide
    exactly which commands a script can find."""
    bindir = tmp / "sysbin"
    bindir.mkdir(exist_ok=True)
    for tool in tools:
        real = require_tool(tool)
        link = bindir / tool
        if not link.exists():
            link.symlink_to(real)
    return bindir
