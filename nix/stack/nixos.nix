# The declaration mapped to NixOS option values: a pure function (builtins only) so it evaluates
# offline with a bare `nix-instantiate` and the module (nix/module.nix) stays a thin shell that
# declares options and applies this result with mkIf/mkMerge.
#
#   (import ./nix/stack { overrides = { logShipper = "alloy"; }; }).nixos {
#     warpwatch = "/nix/store/...-warpwatch"; coreutils = "..."; systemd = "..."; }
#   → { service = { ... }; monitoring = { ... }; }
#
# `service` holds what the service needs on its own (unit, healthcheck, journal namespace,
# firewall); `monitoring` adds Prometheus, Loki, the log shipper and Grafana.
#
# Every option path set below, with the nixos-26.05 module that declares it. Freeform parts are
# marked (*): keys under them are the tool's own settings, not NixOS options.
#   assertions, warnings                          nixos/modules/misc/assertions.nix
#   environment.etc.<name>.text                   nixos/modules/system/etc/etc.nix
#   networking.firewall.allowedTCPPorts           nixos/modules/services/networking/firewall.nix
#   systemd.services.<name>.description           nixos/lib/systemd-unit-options.nix
#   systemd.services.<name>.wantedBy              nixos/lib/systemd-unit-options.nix
#   systemd.services.<name>.wants                 nixos/lib/systemd-unit-options.nix
#   systemd.services.<name>.after                 nixos/lib/systemd-unit-options.nix
#   systemd.services.<name>.environment           nixos/lib/systemd-unit-options.nix
#   systemd.services.<name>.restartTriggers       nixos/lib/systemd-unit-options.nix
#   systemd.services.<name>.script                nixos/lib/systemd-unit-options.nix
#   systemd.services.<name>.serviceConfig (*)     nixos/lib/systemd-unit-options.nix
#   systemd.timers.<name>.description             nixos/lib/systemd-unit-options.nix
#   systemd.timers.<name>.wantedBy                nixos/lib/systemd-unit-options.nix
#   systemd.timers.<name>.timerConfig (*)         nixos/lib/systemd-unit-options.nix
#   services.prometheus.enable                    nixos/modules/services/monitoring/prometheus/default.nix
#   services.prometheus.listenAddress             nixos/modules/services/monitoring/prometheus/default.nix
#   services.prometheus.port                      nixos/modules/services/monitoring/prometheus/default.nix
#   services.prometheus.stateDir                  nixos/modules/services/monitoring/prometheus/default.nix
#   services.prometheus.retentionTime             nixos/modules/services/monitoring/prometheus/default.nix
#   services.prometheus.globalConfig              nixos/modules/services/monitoring/prometheus/default.nix
#   services.prometheus.scrapeConfigs             nixos/modules/services/monitoring/prometheus/default.nix
#   services.prometheus.rules                     nixos/modules/services/monitoring/prometheus/default.nix
#   services.loki.enable                          nixos/modules/services/monitoring/loki.nix
#   services.loki.dataDir                         nixos/modules/services/monitoring/loki.nix
#   services.loki.configuration (*)               nixos/modules/services/monitoring/loki.nix
#   services.alloy.enable                         nixos/modules/services/monitoring/alloy.nix
#   services.alloy.configPath                     nixos/modules/services/monitoring/alloy.nix
#   services.alloy.extraFlags                     nixos/modules/services/monitoring/alloy.nix
#   services.grafana.enable                       nixos/modules/services/monitoring/grafana.nix
#   services.grafana.openFirewall                 nixos/modules/services/monitoring/grafana.nix
#   services.grafana.settings (*)                 nixos/modules/services/monitoring/grafana.nix
#   services.grafana.provision.enable             nixos/modules/services/monitoring/grafana.nix
#   services.grafana.provision.datasources.settings  nixos/modules/services/monitoring/grafana.nix
#   services.grafana.provision.dashboards.settings   nixos/modules/services/monitoring/grafana.nix
# services.promtail is NOT used: nixos-26.05 removed it, so Promtail gets its own unit here.
{
  stack,
  configs,
  toYAML,
}:
{
  # Store path of the warpwatch package; its binary is the service and every healthcheck probe.
  warpwatch,
  # Store path of a Promtail package (only read when logShipper = "promtail").
  promtail ? null,
  # Store paths of coreutils (ln) and systemd (systemctl) for the shipper and the healthchecks.
  coreutils,
  systemd,
  listenAddress ? stack.bindAddress,
  openFirewall ? false,
  # Extra environment of the warpwatch unit (RUST_LOG etc.); wins over the defaults below.
  extraEnvironment ? { },
  grafana ? { },
  # Where Grafana finds the dashboard JSON files.
  dashboardsPath ? configs.dashboardsDir,
}:
let
  inherit (import ./lib.nix) concatMerge loopback seconds;
  services = stack.services;
  shipper = stack.logShipper;

  grafanaArgs = {
    adminPasswordFile = null;
    secretKeyFile = null;
    listenAddress = stack.bindAddress;
    openFirewall = false;
  }
  // grafana;

  unitOf = name: "${name}.service";

  # systemd wants StateDirectory= relative to /var/lib; the declaration speaks absolute paths.
  stateDirectoryOf =
    name:
    let
      parts = builtins.match "/var/lib/(.+)" services.${name}.dataDir;
    in
    if parts == null then
      throw "warpwatch stack: services.${name}.dataDir must be under /var/lib on a NixOS host (got ${
        builtins.toJSON services.${name}.dataDir
      })"
    else
      builtins.head parts;

  # One journald namespace per service: its own files, bounded like compose's json-file driver
  # (maxSizeMiB per file, maxFiles files), without touching the host's global journald.conf.
  journalNamespace = name: name;
  journaldConf = ''
    [Journal]
    Storage=persistent
    SystemMaxFileSize=${toString stack.logging.maxSizeMiB}M
    SystemMaxFiles=${toString stack.logging.maxFiles}
    SystemMaxUse=${toString (stack.logging.maxSizeMiB * stack.logging.maxFiles)}M
  '';
  journaldEtc = name: {
    "systemd/journald@${journalNamespace name}.conf".text = journaldConf;
  };

  # Limits every unit of the stack carries, whichever module owns the rest of the unit.
  limits = name: {
    MemoryMax = "${toString services.${name}.memoryMiB}M";
    LogNamespace = journalNamespace name;
  };

  # The healthcheck: a timer runs the probe every intervalSeconds; `retries` failures in a row
  # (outside the start period, as in Docker) restart the unit. The counter lives in /run, so a
  # reboot starts clean; every failure and restart is logged to the journal with a priority.
  healthcheck =
    name:
    let
      service = services.${name};
      unit = unitOf name;
      hc = stack.healthcheck;
      unitName = "${stack.project}-health-${name}";
    in
    {
      systemd.services.${unitName} = {
        description = "Healthcheck of ${unit}";
        script = ''
          state="$RUNTIME_DIRECTORY/failures"
          if ! ${systemd}/bin/systemctl is-active --quiet ${unit}; then
            # Stopped on purpose or already being restarted by systemd: not ours to judge.
            echo 0 > "$state"
            exit 0
          fi
          entered=$(${systemd}/bin/systemctl show --property=ActiveEnterTimestampMonotonic --value ${unit})
          read -r uptime _ < /proc/uptime
          if [ $(( ''${uptime%.*} * 1000000 - entered )) -lt ${
            toString (service.startPeriodSeconds * 1000000)
          } ]; then
            exit 0
          fi
          if reason=$(${warpwatch}/bin/warpwatch probe --timeout ${toString hc.timeoutSeconds} ${service.healthUrl} 2>&1); then
            echo 0 > "$state"
            exit 0
          fi
          previous=$(cat "$state" 2>/dev/null || true)
          failures=$(( ''${previous:-0} + 1 ))
          echo "$failures" > "$state"
          echo "<4>${name} healthcheck failed ($failures/${toString hc.retries}): $reason"
          if [ "$failures" -ge ${toString hc.retries} ]; then
            echo 0 > "$state"
            echo "<3>${name} unhealthy after ${toString hc.retries} consecutive failed probes: restarting ${unit}"
            ${systemd}/bin/systemctl restart --no-block ${unit}
          fi
        '';
        # Root only to reach systemd's private socket for the restart; otherwise the sandbox,
        # with the failure counter in /run.
        serviceConfig = sandbox // {
          Type = "oneshot";
          RuntimeDirectory = "${stack.project}-health/${name}";
          RuntimeDirectoryPreserve = "yes";
          TimeoutStartSec = seconds (hc.timeoutSeconds + 5);
          RestrictAddressFamilies = [
            "AF_UNIX"
            "AF_INET"
            "AF_INET6"
          ];
        };
      };
      systemd.timers.${unitName} = {
        description = "Healthcheck of ${unit} every ${seconds hc.intervalSeconds}";
        wantedBy = [ "timers.target" ];
        timerConfig = {
          OnActiveSec = seconds hc.intervalSeconds;
          OnUnitActiveSec = seconds hc.intervalSeconds;
          AccuracySec = "1s";
        };
      };
    };

  mergeAll = builtins.foldl' concatMerge { };

  # The sandbox every long-running unit of ours gets: no capabilities, a read-only system, no
  # kernel or clock access, native syscalls only.
  sandbox = {
    CapabilityBoundingSet = "";
    NoNewPrivileges = true;
    PrivateTmp = true;
    PrivateDevices = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    ProtectClock = true;
    ProtectControlGroups = true;
    ProtectHostname = true;
    ProtectKernelLogs = true;
    ProtectKernelModules = true;
    ProtectKernelTunables = true;
    ProtectProc = "invisible";
    LockPersonality = true;
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    SystemCallArchitectures = "native";
    UMask = "0077";
  };

  # systemd-analyze security ≤ 2.0 for the service: the sandbox plus a private user, IPC and mount
  # namespace, a syscall allow-list without @privileged/@resources, IPv4/IPv6 sockets only.
  warpwatchHardening = sandbox // {
    DynamicUser = true;
    AmbientCapabilities = "";
    PrivateUsers = true;
    PrivateIPC = true;
    PrivateMounts = true;
    ProcSubset = "pid";
    MemoryDenyWriteExecute = true;
    RestrictAddressFamilies = [
      "AF_INET"
      "AF_INET6"
    ];
    RemoveIPC = true;
    SystemCallFilter = [
      "@system-service"
      "~@privileged"
      "~@resources"
    ];
    SystemCallErrorNumber = "EPERM";
    DevicePolicy = "closed";
  };

  isLoopbackOrWildcard = builtins.elem listenAddress [
    loopback
    "0.0.0.0"
    "::"
  ];

  serviceFragments = [
    {
      systemd.services.warpwatch = {
        description = "warpwatch web service";
        wantedBy = [ "multi-user.target" ];
        after = [ "network.target" ];
        environment = {
          WARPWATCH_ADDR = "${listenAddress}:${toString services.warpwatch.port}";
          WARPWATCH_DATA_DIR = services.warpwatch.dataDir;
          RUST_LOG = "info";
        }
        // extraEnvironment;
        serviceConfig =
          warpwatchHardening
          // limits "warpwatch"
          // {
            ExecStart = "${warpwatch}/bin/warpwatch";
            # The visits file lives here and survives rebuilds and reboots.
            StateDirectory = stateDirectoryOf "warpwatch";
            StateDirectoryMode = "0700";
            WorkingDirectory = services.warpwatch.dataDir;
            Restart = "always";
            RestartSec = "2s";
          };
      };
      environment.etc = journaldEtc "warpwatch";
      networking.firewall.allowedTCPPorts = if openFirewall then [ services.warpwatch.port ] else [ ];
      warnings =
        (
          if openFirewall && listenAddress == loopback then
            [
              "services.warpwatch.openFirewall opens port ${toString services.warpwatch.port}, but warpwatch listens on ${loopback} only; set services.warpwatch.listenAddress (e.g. \"0.0.0.0\") to expose it."
            ]
          else
            [ ]
        )
        ++ (
          if isLoopbackOrWildcard then
            [ ]
          else
            [
              "services.warpwatch.listenAddress = ${builtins.toJSON listenAddress}: the healthcheck and Prometheus reach warpwatch on ${loopback}, so they will fail; use \"0.0.0.0\" (plus the firewall) to expose it."
            ]
        );
      assertions = [ ];
    }
    (healthcheck "warpwatch")
  ];

  # --- monitoring -------------------------------------------------------------------------------

  namespaces = map journalNamespace stack.activeServiceNames;
  runtimeDir = "/run/${shipper}";
  # The default journal (the healthcheck events, other units) plus every namespace of the stack.
  # A namespace's files live in /var/log/journal/<machine-id>.<namespace>; the machine id is only
  # known at run time, so ExecStartPre links them into the shipper's RuntimeDirectory (%m).
  journalLink = ns: "${runtimeDir}/journal-${ns}";
  shipperConfig = configs.promtail {
    target = "host";
    journalPaths = [ "/var/log/journal" ] ++ map journalLink namespaces;
    stateDir = services.${shipper}.dataDir;
  };
  shipperConfigText = toYAML shipperConfig;
  shipperConfigPath = "${shipper}/promtail.yaml";
  journalLinks = map (
    ns: "${coreutils}/bin/ln -sfn /var/log/journal/%m.${ns} ${journalLink ns}"
  ) namespaces;
  journaldUnits = map (ns: "systemd-journald@${ns}.service") namespaces;

  shipperUnit = {
    wants = journaldUnits;
    after = [
      "network.target"
      "loki.service"
    ]
    ++ journaldUnits;
    restartTriggers = [ shipperConfigText ];
    serviceConfig = limits shipper // {
      RuntimeDirectory = shipper;
      ExecStartPre = journalLinks;
    };
  };

  promtailUnit = shipperUnit // {
    description = "Promtail log shipper (end-of-life upstream)";
    wantedBy = [ "multi-user.target" ];
    serviceConfig =
      shipperUnit.serviceConfig
      // sandbox
      // {
        ExecStart = "${promtail}/bin/promtail -config.file=/etc/${shipperConfigPath}";
        DynamicUser = true;
        SupplementaryGroups = [ "systemd-journal" ];
        StateDirectory = stateDirectoryOf "promtail";
        Restart = "always";
        RestartSec = "2s";
        TimeoutStopSec = "10s";
        RestrictAddressFamilies = [
          "AF_UNIX"
          "AF_INET"
          "AF_INET6"
        ];
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
        ];
      };
  };

  shipperFragment =
    if shipper == "promtail" then
      {
        systemd.services = if promtail == null then { } else { promtail = promtailUnit; };
        assertions = [
          {
            assertion = promtail != null;
            message = "services.warpwatch.monitoring.logShipper = \"promtail\" needs services.warpwatch.monitoring.promtailPackage (nixpkgs 26.05 has no promtail; the flake's nixosModules.default sets it from nixos-25.11), or use logShipper = \"alloy\".";
          }
        ];
        warnings = [
          "services.warpwatch.monitoring.logShipper = \"promtail\": Promtail is end-of-life upstream (no fixes since 2026-03, removed from nixpkgs 26.05). Switch to \"alloy\", which runs the same configuration."
        ];
      }
    else
      {
        systemd.services.alloy = shipperUnit;
      };

  alloy = {
    enable = shipper == "alloy";
    configPath = "/etc/${shipperConfigPath}";
    extraFlags = [
      "--config.format=promtail"
      "--server.http.listen-addr=${loopback}:${toString services.alloy.port}"
      "--storage.path=${services.alloy.dataDir}"
      "--disable-reporting"
    ];
  };

  grafanaConfig = configs.grafana {
    target = "host";
    inherit dashboardsPath;
  };
  # systemd copies the secret files into the unit's credentials directory, readable by Grafana's
  # user only; the files themselves may stay root:root 0400 and never enter the Nix store.
  credential = name: "/run/credentials/grafana.service/${name}";
  secretFileProblems =
    option: example: value:
    if value == null then
      [
        "services.warpwatch.grafana.${option} must be set when services.warpwatch.monitoring.enable is true: an absolute path to a root-readable file outside the Nix store (e.g. \"/run/secrets/${example}\"), created before the service starts."
      ]
    else if builtins.match "/.*" value == null then
      [
        "services.warpwatch.grafana.${option} must be an absolute path (got ${builtins.toJSON value})."
      ]
    else if builtins.match "/nix/store/.*" value != null then
      [
        "services.warpwatch.grafana.${option} points into the Nix store (${value}), which is world-readable: keep the secret outside the store, e.g. in /run/secrets."
      ]
    else
      [ ];
  secretProblems =
    secretFileProblems "adminPasswordFile" "grafana-admin-password" grafanaArgs.adminPasswordFile
    ++ secretFileProblems "secretKeyFile" "grafana-secret-key" grafanaArgs.secretKeyFile;

  promConfig = configs.prometheus {
    target = "host";
    # Wired through services.prometheus.rules (checked by promtool at build time).
    ruleFiles = [ ];
  };

  monitoringServices = {
    prometheus = {
      enable = true;
      listenAddress = loopback;
      port = services.prometheus.port;
      stateDir = stateDirectoryOf "prometheus";
      retentionTime = stack.prometheus.retention;
      globalConfig = promConfig.global;
      scrapeConfigs = promConfig.scrape_configs;
      rules = [ configs.rules ];
    };
    loki = {
      enable = true;
      dataDir = services.loki.dataDir;
      configuration = configs.loki { target = "host"; };
    };
    grafana = {
      enable = true;
      openFirewall = grafanaArgs.openFirewall;
      settings = {
        server = {
          http_addr = grafanaArgs.listenAddress;
          http_port = services.grafana.port;
        };
        security = {
          admin_user = "admin";
          admin_password = "$__file{${credential "admin-password"}}";
          secret_key = "$__file{${credential "secret-key"}}";
        };
        analytics.reporting_enabled = false;
      };
      provision = {
        enable = true;
        datasources.settings = grafanaConfig.datasources;
        dashboards.settings = grafanaConfig.dashboards;
      };
    };
  };

  monitoringFragments = [
    {
      systemd.services = {
        prometheus.serviceConfig = limits "prometheus";
        loki.serviceConfig = limits "loki";
        grafana.serviceConfig = limits "grafana" // {
          LoadCredential =
            let
              credentialOf = name: file: if file == null then [ ] else [ "${name}:${file}" ];
            in
            credentialOf "admin-password" grafanaArgs.adminPasswordFile
            ++ credentialOf "secret-key" grafanaArgs.secretKeyFile;
        };
      };
      environment.etc = {
        ${shipperConfigPath}.text = shipperConfigText;
      }
      // builtins.foldl' (acc: name: acc // journaldEtc name) { } (
        builtins.filter (name: name != "warpwatch") stack.activeServiceNames
      );
      assertions = map (message: {
        assertion = false;
        inherit message;
      }) secretProblems;
      warnings =
        if grafanaArgs.openFirewall && grafanaArgs.listenAddress == loopback then
          [
            "services.warpwatch.grafana.openFirewall opens port ${toString services.grafana.port}, but Grafana listens on ${loopback} only; set services.warpwatch.grafana.listenAddress (e.g. \"0.0.0.0\") to expose it."
          ]
        else
          [ ];
    }
    shipperFragment
  ]
  ++ map healthcheck (builtins.filter (name: name != "warpwatch") stack.activeServiceNames);

  # The module applies these under mkIf; the module system must see their attribute names (down to
  # the options under `services`) without evaluating the declaration, whose overrides are option
  # values themselves. Hence a fixed skeleton filled from the merged fragments.
  assemble =
    fragments:
    let
      merged = mergeAll fragments;
    in
    {
      systemd = {
        services = merged.systemd.services or { };
        timers = merged.systemd.timers or { };
      };
      environment.etc = merged.environment.etc or { };
      networking.firewall.allowedTCPPorts = merged.networking.firewall.allowedTCPPorts or [ ];
      assertions = merged.assertions or [ ];
      warnings = merged.warnings or [ ];
    };
in
{
  service = assemble serviceFragments;
  monitoring = assemble monitoringFragments // {
    services = {
      inherit (monitoringServices)
        prometheus
        loki
        grafana
        ;
      inherit alloy;
    };
  };
}
