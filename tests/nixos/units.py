"""Unit files from the offline NixOS mapping, written the way NixOS writes them.

The mapping (nix/stack/nixos/) yields option values (`systemd.services.<n>`, `systemd.timers.<n>`,
`environment.etc`); NixOS turns them into files with nixos/lib/systemd-lib.nix and the script
handling of nixos/lib/systemd-unit-options.nix. This module follows those rules, as read there:

- Sections are `key=value` lines (`attrsToSection`), keys in Nix attribute order (sorted); a list
  value repeats its key once per item; `true`/`false` stay so; anything else is its `toString`
  (numbers in decimal, null as the empty string).
- [Unit]: `description` → Description=; `after`, `wants`, `requires`, `before`, `bindsTo`,
  `partOf`, `conflicts`, `requisite`, `upholds` → one key, items space-joined (toString of a list);
  `restartTriggers` → X-Restart-Triggers= naming a store file holding them; `unitConfig` as is.
- [Service]: one `Environment="NAME=value"` per variable (the pair JSON-quoted), sorted by name,
  PATH included: the unit's `path` plus NixOS' default coreutils, findutils, gnugrep, gnused and
  systemd, as `<p>/bin` for each then `<p>/sbin` for each. Then `serviceConfig`. `script` becomes
  ExecStart=<store>/bin/<name>-start plus " " + scriptArgs (so a trailing space), a bash script
  starting `set -e` (writeShellScriptBin, enableStrictShellChecks off); `preStart` likewise
  becomes ExecStartPre=<store>/bin/<name>-pre-start.
- [Timer]: `timerConfig`. [Install]: WantedBy= space-joined; NixOS also links the unit into
  <target>.wants/ itself, which `wants_links` reproduces.
- /etc/systemd/journald.conf (nixos/modules/system/boot/systemd/journald.nix): one [Journal]
  section of NixOS' own settings (Storage=, RateLimitInterval=, RateLimitBurst=, the console and
  syslog lines when enabled, Audit=), then `services.journald.extraConfig` as it is.

Host-wide environment (systemd.globalEnvironment: LOCALE_ARCHIVE, TZDIR) is left out: it belongs to
the host, not to the mapping. Values may carry module-system priority wrappers (mkDefault,
mkOverride, mkIf) when the mapping is evaluated with stand-ins for them: `plain` strips them.
"""

import hashlib
import json
from pathlib import Path

UNIT_LIST_KEYS = {
    "after": "After",
    "before": "Before",
    "bindsTo": "BindsTo",
    "conflicts": "Conflicts",
    "partOf": "PartOf",
    "requires": "Requires",
    "requisite": "Requisite",
    "upholds": "Upholds",
    "wants": "Wants",
}
# NixOS' stage-2 default `path` of every service, in its order.
DEFAULT_PATH = ("coreutils", "findutils", "gnugrep", "gnused", "systemd")
# The services.journald options NixOS writes into journald.conf, at their defaults (a host that
# runs neither rsyslogd nor syslog-ng: no forwarding to syslog).
JOURNALD_DEFAULTS = {
    "storage": "persistent",
    "rateLimitInterval": "30s",
    "rateLimitBurst": 10000,
    "console": "",
    "forwardToSyslog": False,
    "audit": "keep",
    "extraConfig": "",
}


def plain(value):
    """The value without module-system wrappers: mkOverride/mkDefault/mkForce → its content,
    mkIf → its content when the condition holds (dropped otherwise, as None), mkMerge → merged."""
    if isinstance(value, dict):
        kind = value.get("_type")
        if kind == "override":
            return plain(value["content"])
        if kind == "if":
            return plain(value["content"]) if plain(value["condition"]) else None
        if kind == "merge":
            merged = None
            for part in (plain(p) for p in value["contents"]):
                merged = part if merged is None else merge(merged, part)
            return merged
        return {k: v for k, v in ((k, plain(v)) for k, v in value.items()) if v is not None}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


def merge(a, b):
    """Two definitions merged the way the module system merges them: attribute sets key by key,
    lists concatenated; of two other values the second wins (where the module system would
    report a conflict unless they are equal)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {**a, **{k: merge(a[k], v) if k in a else v for k, v in b.items()}}
    if isinstance(a, list) and isinstance(b, list):
        return a + b
    return b


def to_option(value) -> str:
    """NixOS' toOption: booleans as true/false, everything else through toString."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    return _to_string(value)


def _to_string(value) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(_to_string(v) for v in value)
    if isinstance(value, bool):
        return "1" if value else ""
    return str(value)


def attrs_to_section(attrs: dict) -> str:
    return "".join(
        f"{name}={to_option(item)}\n"
        for name in sorted(attrs)
        for item in (attrs[name] if isinstance(attrs[name], list) else [attrs[name]])
    )


class Store:
    """A directory standing for /nix/store: `add` writes a file as a store object of its own and
    returns the path it has under /nix/store (the directory is bind-mounted there)."""

    def __init__(self, directory: Path, prefix: str = "/nix/store"):
        self.directory = directory
        self.prefix = prefix
        directory.mkdir(parents=True, exist_ok=True)

    def add(self, name: str, relative: str, text: str, mode: int = 0o444) -> str:
        digest = hashlib.sha256(f"{name}\0{relative}\0{text}".encode()).hexdigest()[:32]
        entry = f"{digest}-{name}"
        path = self.directory / entry / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        path.chmod(mode)
        return f"{self.prefix}/{entry}/{relative}"


def _unit_section(unit: dict, store: Store, name: str) -> str:
    config = dict(unit.get("unitConfig", {}))
    for key, directive in UNIT_LIST_KEYS.items():
        if unit.get(key):
            config[directive] = _to_string(unit[key])
    if unit.get("description"):
        config["Description"] = unit["description"]
    if unit.get("restartTriggers"):
        config["X-Restart-Triggers"] = store.add(
            f"X-Restart-Triggers-{name}", "triggers", _to_string(unit["restartTriggers"])
        )
    return "[Unit]\n" + attrs_to_section(config) + "\n"


def _install_section(unit: dict) -> str:
    wanted = unit.get("wantedBy", [])
    return f"\n[Install]\nWantedBy={' '.join(wanted)}\n" if wanted else ""


def render_service(name: str, unit: dict, store: Store, packages: dict, bash: str) -> str:
    """systemd.services.<name> as NixOS writes <name>.service. `packages` maps the default path's
    package names (DEFAULT_PATH) to store paths; `bash` is the store path of the shell scripts run
    with (pkgs.runtimeShell)."""
    unit = plain(unit)
    service = dict(unit.get("serviceConfig", {}))
    script_name = name.replace("\\", "-").replace("@", "_")
    if unit.get("script"):
        text = f"#!{bash}/bin/bash\nset -e\n\n{unit['script']}"
        program = store.add(f"unit-script-{script_name}-start", f"bin/{script_name}-start", text, mode=0o555)
        service["ExecStart"] = program + " " + unit.get("scriptArgs", "")
    if unit.get("preStart"):
        text = f"#!{bash}/bin/bash\nset -e\n\n{unit['preStart']}"
        program = store.add(f"unit-script-{script_name}-pre-start", f"bin/{script_name}-pre-start", text, mode=0o555)
        service["ExecStartPre"] = [program]
    path = [*unit.get("path", []), *(packages[p] for p in DEFAULT_PATH)]
    environment = {
        **unit.get("environment", {}),
        "PATH": ":".join([f"{p}/bin" for p in path] + [f"{p}/sbin" for p in path]),
    }
    env_lines = "".join(
        "Environment=" + json.dumps(f"{k}={environment[k]}", ensure_ascii=False) + "\n"
        for k in sorted(environment)
        if environment[k] is not None
    )
    return _unit_section(unit, store, name) + "[Service]\n" + env_lines + attrs_to_section(service) + _install_section(unit)


def render_timer(name: str, unit: dict, store: Store) -> str:
    unit = plain(unit)
    return _unit_section(unit, store, name) + "[Timer]\n" + attrs_to_section(unit.get("timerConfig", {})) + "\n" + _install_section(unit)


def render_journald(journald: dict) -> str:
    """services.journald as NixOS writes /etc/systemd/journald.conf. Each optional block is a line
    of the module's text of its own, so an unset one leaves an empty line."""
    cfg = {**JOURNALD_DEFAULTS, **journald}
    console = f"ForwardToConsole=yes\nTTYPath={cfg['console']}\n" if cfg["console"] != "" else ""
    syslog = "ForwardToSyslog=yes\n" if cfg["forwardToSyslog"] else ""
    return (
        f"[Journal]\nStorage={cfg['storage']}\nRateLimitInterval={cfg['rateLimitInterval']}\n"
        f"RateLimitBurst={cfg['rateLimitBurst']}\n{console}\n{syslog}\nAudit={to_option(cfg['audit'])}\n"
        f"{cfg['extraConfig']}\n"
    )


def render_system(result: dict, store: Store, packages: dict, bash: str) -> dict[str, str]:
    """{path relative to /etc: text} for the units and /etc files of one mapping result
    (e.g. `service` of the mapping): systemd/system/<unit> files, environment.etc, and
    systemd/journald.conf when the result sets services.journald."""
    result = plain(result)
    files = {}
    if "journald" in result.get("services", {}):
        files["systemd/journald.conf"] = render_journald(result["services"]["journald"])
    for name, unit in result.get("systemd", {}).get("services", {}).items():
        files[f"systemd/system/{name}.service"] = render_service(name, unit, store, packages, bash)
    for name, unit in result.get("systemd", {}).get("timers", {}).items():
        files[f"systemd/system/{name}.timer"] = render_timer(name, unit, store)
    for name, entry in result.get("environment", {}).get("etc", {}).items():
        files[name] = entry["text"]
    return files


def wants_links(result: dict) -> dict[str, str]:
    """{link relative to /etc/systemd/system: target} for every wantedBy, as NixOS links them."""
    result = plain(result)
    links = {}
    for kind in ("services", "timers"):
        suffix = "service" if kind == "services" else "timer"
        for name, unit in result.get("systemd", {}).get(kind, {}).items():
            for target in unit.get("wantedBy", []):
                links[f"{target}.wants/{name}.{suffix}"] = f"../{name}.{suffix}"
    return links
