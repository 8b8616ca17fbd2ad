"""What nixpkgs' own modules (nixos-26.05: nixos/modules/services/monitoring/prometheus/default.nix,
loki.nix, grafana.nix) put into the serviceConfig of the units the stack shares with them, as far as
`systemd-analyze security` scores it; copied from those modules, since the offline suite has no
nixpkgs. The merged units were confirmed at development time with the real modules (the offline
NixOS harness), which render exactly these values plus ours.

`merge_unit` combines them with the mapping's values the way the module system does: a plain
definition (nixpkgs' or ours) beats a default (mkDefault), lists of one priority concatenate, and
two different values of one priority for one directive are a conflict.
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


# Issue 17. nixos/modules/services/monitoring/prometheus/alertmanager.nix: every value plain.
ALERTMANAGER_SERVICE_CONFIG = {
    "CapabilityBoundingSet": [""],
    "DeviceAllow": [""],
    "DynamicUser": True,
    "NoNewPrivileges": True,
    "MemoryDenyWriteExecute": True,
    "LockPersonality": True,
    "ProtectProc": "invisible",
    "ProtectSystem": "strict",
    "ProtectHome": "tmpfs",
    "PrivateTmp": True,
    "PrivateDevices": True,
    "PrivateIPC": True,
    "ProcSubset": "pid",
    "ProtectHostname": True,
    "ProtectClock": True,
    "ProtectKernelTunables": True,
    "ProtectKernelModules": True,
    "ProtectKernelLogs": True,
    "ProtectControlGroups": True,
    "Restart": "always",
    "RestrictAddressFamilies": ["AF_INET", "AF_INET6", "AF_NETLINK"],
    "RestrictNamespaces": True,
    "RestrictRealtime": True,
    "RestrictSUIDSGID": True,
    "StateDirectory": "alertmanager",
    "SystemCallFilter": ["@system-service", "~@cpu-emulation", "~@privileged", "~@reboot", "~@setuid", "~@swap"],
    "WorkingDirectory": "/tmp",
}
# Where its preStart writes the configuration after envsubst, and ExecStart reads it.
ALERTMANAGER_CONFIG = "/tmp/alert-manager-substituted.yaml"


def _default(value) -> dict:
    return {"_type": "override", "priority": 1000, "content": value}


def alertmanager_unit(options: dict, package: str, envsubst: str, config_file: str) -> dict:
    """systemd.services.alertmanager as alertmanager.nix builds it from its (resolved) options;
    `config_file` is the store file of the configuration (`configuration` as JSON)."""
    args = [
        *options.get("extraFlags", []),
        f"--config.file {ALERTMANAGER_CONFIG}",
        f"--web.listen-address {options['listenAddress']}:{options['port']}",
        "--log.level warn",
        "--storage.path /var/lib/alertmanager",
        "",  # toString of the empty clusterPeers list
    ]
    return {
        "wantedBy": ["multi-user.target"],
        "wants": ["network-online.target"],
        "after": ["network-online.target"],
        "preStart": f'{envsubst}/bin/envsubst -o "{ALERTMANAGER_CONFIG}" \\\n  -i "{config_file}"\n',
        "serviceConfig": {
            **ALERTMANAGER_SERVICE_CONFIG,
            "ExecStart": f"{package}/bin/alertmanager \\\n  " + " \\\n  ".join(args),
        },
    }


def node_exporter_unit(options: dict, package: str) -> dict:
    """systemd.services.prometheus-node-exporter as exporters.nix (the generic exporter unit, some
    values mkDefault) and exporters/node.nix (default collectors: timex and netdev on) build it."""
    return {
        "wantedBy": ["multi-user.target"],
        "after": ["network.target"],
        "serviceConfig": {
            "Restart": _default("always"),
            "PrivateTmp": _default(True),
            "WorkingDirectory": _default("/tmp"),
            "DynamicUser": False,
            "User": _default("node-exporter"),
            "Group": "node-exporter",
            "CapabilityBoundingSet": _default([""]),
            "DeviceAllow": [""],
            "LockPersonality": True,
            "MemoryDenyWriteExecute": True,
            "NoNewPrivileges": True,
            "PrivateDevices": _default(True),
            "ProtectClock": False,
            "ProtectControlGroups": True,
            "ProtectHome": True,
            "ProtectHostname": True,
            "ProtectKernelLogs": True,
            "ProtectKernelModules": True,
            "ProtectKernelTunables": True,
            "ProtectSystem": _default("strict"),
            "RemoveIPC": True,
            "RestrictAddressFamilies": ["AF_INET", "AF_INET6", "AF_NETLINK"],
            "RestrictNamespaces": True,
            "RestrictRealtime": True,
            "RestrictSUIDSGID": True,
            "SystemCallArchitectures": "native",
            "UMask": "0077",
            "RuntimeDirectory": "prometheus-node-exporter",
            "ExecStart": f"{package}/bin/node_exporter \\\n  \\\n  \\\n  "
            f"--web.listen-address {options['listenAddress']}:{options['port']} \n",
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
        definitions = [_priority(nixpkgs[key])] if key in nixpkgs else []
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


# nixpkgs' reload machinery of the Prometheus module (nixos-26.05 and master alike): with
# `enableReload`, ExecStart reads /etc/prometheus/prometheus.yaml (a fixed path, so the unit
# file does not change with the configuration), ExecReload sends SIGHUP and waits for the
# "Completed loading" message in the journal, and prometheus-config-reload carries the
# configuration as a restart trigger with reloadIfChanged, so switch-to-configuration reloads it
# (and through it Prometheus) when only the configuration changed.
PROMETHEUS_RELOAD_SCRIPT = """\
#!{bash}/bin/bash
PATH="{systemd}/bin:{coreutils}/bin:{gnugrep}/bin"
cursor=$(journalctl --show-cursor -n0 | grep -oP "cursor: \\K.*")
kill -HUP $MAINPID
journalctl -u prometheus.service --after-cursor="$cursor" -f \\
  | grep -m 1 "Completed loading of configuration file" > /dev/null
"""
PROMETHEUS_TRIGGER_RELOAD_SCRIPT = """\
#!{bash}/bin/bash
PATH="{systemd}/bin"
if systemctl -q is-active prometheus.service; then
  systemctl reload prometheus.service
fi
"""


def nixpkgs_prometheus(
    options: dict,
    ours: dict,
    config_text: str,
    store,
    packages: dict,
    prometheus: str,
    agent_flag: str = "--agent",
) -> dict:
    """What nixpkgs' Prometheus module defines from the mapping's services.prometheus values
    (`options`, resolved) and its systemd.services.prometheus.serviceConfig (`ours`, with
    priorities): the prometheus unit, the reload unit and /etc file when enableReload is on.
    `packages` are the store paths of bash/systemd/coreutils/gnugrep; `prometheus` the package's.
    nixpkgs' reload unit logs with util-linux's logger; coreutils' echo stands for it here.
    Its command line is nixpkgs' cmdlineArgs: extraFlags first, then in agent mode the agent flag
    (nixos-26.05's Prometheus 3 takes `--agent`; Debian's 2.42 `--enable-feature=agent`, given as
    `agent_flag`) instead of the TSDB path."""
    reload = options.get("enableReload", False)  # nixpkgs' default
    config_file = store.add("prometheus.yml", "prometheus.yml", config_text)
    state_dir = options.get("stateDir", "prometheus2")
    listen = f"{options.get('listenAddress', '0.0.0.0')}:{options.get('port', 9090)}"
    storage = agent_flag if options.get("enableAgentMode", False) else f"--storage.tsdb.path=/var/lib/{state_dir}/data/"
    service = {
        **NIXPKGS_SERVICE_CONFIG["prometheus"],
        "ExecStart": " ".join(
            [
                f"{prometheus}/bin/prometheus",
                *options.get("extraFlags", []),
                f"--config.file={'/etc/prometheus/prometheus.yaml' if reload else config_file}",
                f"--web.listen-address={listen}",
                storage,
            ]
        ),
        "Restart": "always",
        "RuntimeDirectory": "prometheus",
        "RuntimeDirectoryMode": "0700",
        "StateDirectory": state_dir,
        "StateDirectoryMode": "0700",
        "WorkingDirectory": f"/var/lib/{state_dir}",
    }
    units = {"prometheus": {"after": ["network.target"], "wantedBy": ["multi-user.target"]}}
    etc = {}
    if reload:
        script = PROMETHEUS_RELOAD_SCRIPT.format(**packages)
        service["ExecReload"] = "+" + store.add("reload-prometheus", "bin/reload-prometheus", script, 0o555)
        trigger = PROMETHEUS_TRIGGER_RELOAD_SCRIPT.format(**packages)
        units["prometheus-config-reload"] = {
            "after": ["prometheus.service"],
            "restartTriggers": [config_file],
            "wantedBy": ["prometheus.service"],
            "serviceConfig": {
                "ExecReload": [store.add("trigger-reload-prometheus", "bin/trigger-reload-prometheus", trigger, 0o555)],
                "ExecStart": f"{packages['coreutils']}/bin/echo 'prometheus-config-reload will only reload"
                " prometheus when reloaded itself.'",
                "RemainAfterExit": True,
                "TimeoutSec": 60,
                "Type": "oneshot",
            },
        }
        etc["prometheus/prometheus.yaml"] = {"text": config_text}
    units["prometheus"]["serviceConfig"] = merge_unit(service, ours)
    return {"systemd": {"services": units}, "environment": {"etc": etc}}
