"""Evaluating the pure NixOS mapping (nix/stack/nixos.nix) offline, and rendering a unit from it.

The mapping takes store paths as plain strings, so tests pass fake ones (or a directory holding
the real warpwatch binary) and assert on the option values it returns. Its priorities come from a
`lib` argument; STANDIN_LIB builds exactly the values nixpkgs' lib.mkOverride/mkIf/mkMerge build
(`{ _type = "override"; priority; content; }` ...), so `mapping_raw` shows which values are
defaults (priority 1000) and `mapping` resolves them the way the module system does for a single
definition.
"""

from pathlib import Path

from conftest import nix_eval, nix_eval_error, nix_value

FAKE = {
    "warpwatch": "/nix/store/00000000000000000000000000000000-warpwatch",
    "promtail": "/nix/store/11111111111111111111111111111111-promtail",
    "alloy": "/nix/store/22222222222222222222222222222222-alloy",
    "systemd": "/nix/store/33333333333333333333333333333333-systemd",
}
SECRETS = {"adminPasswordFile": "/run/secrets/grafana-admin", "secretKeyFile": "/run/secrets/grafana-key"}


def warpwatch_package(directory: Path, warpwatch_bin: Path) -> Path:
    """A package directory whose bin/warpwatch is the real binary, to pass as the mapping's
    `warpwatch` store path."""
    package = directory / "warpwatch-pkg"
    (package / "bin").mkdir(parents=True)
    (package / "bin" / "warpwatch").symlink_to(warpwatch_bin)
    return package


STANDIN_LIB = (
    "rec { mkOverride = priority: content: { _type = \"override\"; inherit priority content; };"
    " mkDefault = mkOverride 1000; mkForce = mkOverride 50;"
    " mkIf = condition: content: { _type = \"if\"; inherit condition content; };"
    " mkMerge = contents: { _type = \"merge\"; inherit contents; }; }"
)
DEFAULT_PRIORITY = 1000


def mapping_expr(overrides: dict | None = None, **args) -> str:
    arguments = {**FAKE, "grafana": dict(SECRETS), "dashboardsPath": "/etc/test-dashboards", **args}
    return (
        f"(import ./nix/stack {{ overrides = {nix_value(overrides or {})}; }}).nixos "
        + nix_value(arguments)[:-1]
        + f"lib = {STANDIN_LIB}; }}"
    )


def mapping_raw(overrides: dict | None = None, **args) -> dict:
    """The mapping's values with their priority wrappers."""
    return nix_eval(mapping_expr(overrides, **args))


def resolve(value):
    """A mapped value as the only definition of its option: wrappers dropped, mkIf applied."""
    if isinstance(value, dict):
        kind = value.get("_type")
        if kind == "override":
            return resolve(value["content"])
        if kind == "if":
            raise AssertionError("the mapping sets no mkIf; resolve() would need the rest of the config")
        return {k: resolve(v) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve(v) for v in value]
    return value


def is_default(value) -> bool:
    """Whether a mapped value is a default (mkDefault) that any host definition wins over."""
    return isinstance(value, dict) and value.get("_type") == "override" and value["priority"] == DEFAULT_PRIORITY


def mapping(overrides: dict | None = None, **args) -> dict:
    return resolve(mapping_raw(overrides, **args))


def mapping_error(overrides: dict | None = None, **args) -> str:
    return nix_eval_error(mapping_expr(overrides, **args))


def merged(result: dict) -> dict:
    """service + monitoring as the module applies them (lists concatenate, sets merge)."""

    def merge(a, b):
        if isinstance(a, dict) and isinstance(b, dict):
            out = dict(a)
            for k, v in b.items():
                out[k] = merge(a[k], v) if k in a else v
            return out
        if isinstance(a, list) and isinstance(b, list):
            return a + b
        return b

    return merge(merge(result["checks"], result["service"]), result["monitoring"])


def _unit_value(value) -> str:
    # NixOS' attrsToSection: booleans as true/false, everything else as its string.
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def render_unit(unit: dict) -> str:
    """A systemd unit file from a mapped systemd.services.<name>, the way NixOS writes it."""
    lines = ["[Unit]"]
    if "description" in unit:
        lines.append(f"Description={unit['description']}")
    for key, directive in (("after", "After"), ("wants", "Wants")):
        for dep in unit.get(key, []):
            lines.append(f"{directive}={dep}")
    lines += ["", "[Service]"]
    for name, value in sorted(unit.get("environment", {}).items()):
        lines.append(f'Environment="{name}={value}"')
    for key, value in sorted(unit.get("serviceConfig", {}).items()):
        for item in value if isinstance(value, list) else [value]:
            lines.append(f"{key}={_unit_value(item)}")
    return "\n".join(lines) + "\n"


def write_unit(directory: Path, name: str, unit: dict) -> Path:
    path = directory / f"{name}.service"
    path.write_text(render_unit(unit))
    return path
