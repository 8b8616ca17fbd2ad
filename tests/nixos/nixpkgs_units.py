"""What nixpkgs' own modules (nixos-26.05: nixos/modules/services/monitoring/prometheus/default.nix,
loki.nix, grafana.nix) put into the serviceConfig of the units the stack shares with them, as far as
`systemd-analyze security` scores it; copied from those modules, since the offline suite has no
nixpkgs. The merged units were confirmed at development time with the real modules (the offline
NixOS harness), which render exactly these values plus ours.

`merge_unit` combines them with the mapping's values the way the module system does: a plain
definition (nixpkgs' or ours) beats a default (mkDefault), lists of one priority concatenate, and
two different plain values for one directive are a conflict.
"""

_COMMON = {
    "NoNewPrivileges": True,
    "PrivateTmp": True,
    "ProtectHome": True,
    "ProtectSystem": "full",
}

NIXPKGS_SERVICE_CONFIG = {
    "prometheus": {
        **_COMMON,
        "CapabilityBoundingSet": [""],
        "DeviceAllow": ["/dev/null rw"],
        "DevicePolicy": "strict",
        "LockPersonality": True,
        "MemoryDenyWriteExecute": True,
        "PrivateDevices": True,
        "PrivateUsers": True,
        "ProtectClock": True,
        "ProtectControlGroups": True,
        "ProtectHostname": True,
        "ProtectKernelLogs": True,
        "ProtectKernelModules": True,
        "ProtectKernelTunables": True,
        "ProtectProc": "invisible",
        "RemoveIPC": True,
        "RestrictAddressFamilies": ["AF_INET", "AF_INET6", "AF_UNIX"],
        "RestrictNamespaces": True,
        "RestrictRealtime": True,
        "RestrictSUIDSGID": True,
        "SystemCallArchitectures": "native",
        "SystemCallFilter": ["@system-service", "~@privileged"],
        "User": "prometheus",
    },
    # nixpkgs' Loki unit is barely sandboxed (issue 12: 8.2 EXPOSED on its own).
    "loki": {
        **_COMMON,
        "DevicePolicy": "closed",
        "User": "loki",
        "WorkingDirectory": "/var/lib/loki",
    },
    "grafana": {
        **_COMMON,
        "CapabilityBoundingSet": [""],
        "DeviceAllow": [""],
        "LockPersonality": True,
        "PrivateDevices": True,
        "ProtectClock": True,
        "ProtectControlGroups": True,
        "ProtectHostname": True,
        "ProtectKernelLogs": True,
        "ProtectKernelModules": True,
        "ProtectKernelTunables": True,
        "ProtectProc": "invisible",
        "RemoveIPC": True,
        "RestrictAddressFamilies": ["AF_INET", "AF_INET6", "AF_UNIX"],
        "RestrictNamespaces": True,
        "RestrictRealtime": True,
        "RestrictSUIDSGID": True,
        "SystemCallArchitectures": "native",
        "SystemCallFilter": ["@system-service", "~@privileged"],
        "UMask": "0027",
        "User": "grafana",
        "WorkingDirectory": "/var/lib/grafana",
    },
}


def _priority(value) -> tuple[int, object]:
    if isinstance(value, dict) and value.get("_type") == "override":
        return value["priority"], value["content"]
    return 100, value


def merge_unit(nixpkgs: dict, ours: dict) -> dict:
    """serviceConfig of a unit both nixpkgs' module (plain values) and the mapping define."""
    merged = {}
    for key in nixpkgs.keys() | ours.keys():
        definitions = [(100, nixpkgs[key])] if key in nixpkgs else []
        if key in ours:
            definitions.append(_priority(ours[key]))
        best = min(priority for priority, _ in definitions)
        values = [value for priority, value in definitions if priority == best]
        if any(isinstance(value, list) for value in values):
            merged[key] = [item for value in values for item in (value if isinstance(value, list) else [value])]
        elif len({repr(value) for value in values}) > 1:
            raise AssertionError(f"conflicting definitions of {key}: {values}")
        else:
            merged[key] = values[0]
    return merged
