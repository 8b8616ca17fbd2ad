# The declaration mapped to NixOS option values: a pure function (builtins only) so it evaluates
# offline with a bare `nix-instantiate` and the module (nix/module.nix) stays a thin shell that
# declares options and applies this result with mkIf/mkMerge. Priorities come from the `lib`
# argument (nixpkgs' mkDefault in the module, a stand-in building the same values in the tests):
# what the stack needs is set plainly, everything a lived-in host may already have its own value
# for (Prometheus' stateDir and listenAddress, Grafana's port and secrets, journald's limits, the
# sandbox of nixpkgs' units) is a default the host's setting wins over.
#
#   (import ./nix/stack { overrides = { logShipper = "alloy"; }; }).nixos {
#     warpwatch = "/nix/store/...-warpwatch"; alloy = "..."; systemd = "..."; lib = { ... }; }
#   → { checks = { ... }; service = { ... }; monitoring = { ... }; }
#
# `service` holds what the service needs on its own (unit, healthcheck, journal limits, firewall);
# `monitoring` adds Prometheus, Loki, the log shipper and Grafana; `checks` are applied always.
#
# Every option path set below, with the nixos-26.05 module that declares it. Freeform parts are
# marked (*): keys under them are the tool's own settings, not NixOS options.
#   assertions, warnings                          nixos/modules/misc/assertions.nix
#   environment.etc.<name>.text                   nixos/modules/system/etc/etc.nix
#   networking.firewall.allowedTCPPorts           nixos/modules/services/networking/firewall.nix
#   systemd.services.<name>.description           nixos/lib/systemd-unit-options.nix
#   systemd.services.<name>.wantedBy              nixos/lib/systemd-unit-options.nix
#   systemd.services.<name>.after                 nixos/lib/systemd-unit-options.nix
#   systemd.services.<name>.environment           nixos/lib/systemd-unit-options.nix
#   systemd.services.<name>.restartTriggers       nixos/lib/systemd-unit-options.nix
#   systemd.services.<name>.script                nixos/lib/systemd-unit-options.nix
#   systemd.services.<name>.serviceConfig (*)     nixos/lib/systemd-unit-options.nix
#   systemd.timers.<name>.description             nixos/lib/systemd-unit-options.nix
#   systemd.timers.<name>.wantedBy                nixos/lib/systemd-unit-options.nix
#   systemd.timers.<name>.timerConfig (*)         nixos/lib/systemd-unit-options.nix
#   services.journald.extraConfig                 nixos/modules/system/boot/systemd/journald.nix
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
#   services.grafana.enable                       nixos/modules/services/monitoring/grafana.nix
#   services.grafana.openFirewall                 nixos/modules/services/monitoring/grafana.nix
#   services.grafana.settings (*)                 nixos/modules/services/monitoring/grafana.nix
#   services.grafana.provision.enable             nixos/modules/services/monitoring/grafana.nix
#   services.grafana.provision.datasources.settings  nixos/modules/services/monitoring/grafana.nix
#   services.grafana.provision.dashboards.settings   nixos/modules/services/monitoring/grafana.nix
# services.promtail is NOT used (nixos-26.05 removed it), nor services.alloy (the host's own
# pipeline may live there): the log shipper runs in a unit of its own, `unitNames.<shipper>`.
{
  stack,
  configs,
  toYAML,
}:
let
  inherit (import ../lib.nix)
    concatMerge
    genAttrs
    loopback
    seconds
    ;
  services = stack.services;
  shipper = stack.logShipper;

  # The shipper runs in a unit of the stack's own (nixpkgs 26.05 has no Promtail module, and
  # services.alloy belongs to the host, which may run its own pipeline there); every other unit
  # is the one its nixpkgs module (or this mapping, for warpwatch) defines.
  unitNames = genAttrs stack.activeServiceNames (
    name: if name == shipper then "${stack.project}-${name}" else name
  );
in
{
  inherit unitNames;
  __functor =
    _:
    {
      # Store path of the warpwatch package; its binary is the service and every healthcheck probe.
      warpwatch,
      # Store paths of the shipper packages (only the one of `logShipper` is read).
      promtail ? null,
      alloy ? null,
      # Store path of systemd (systemctl) for the healthchecks.
      systemd,
      # lib's priority functions (mkDefault, mkOverride): the module passes nixpkgs' own, the
      # offline tests a stand-in that builds the same { _type = "override"; ... } values.
      lib,
      # services.warpwatch.enable and .monitoring.enable, for the checks the module applies always.
      enable ? true,
      monitoringEnable ? true,
      listenAddress ? stack.bindAddress,
      openFirewall ? false,
      # Extra environment of the warpwatch unit (RUST_LOG etc.); wins over the defaults below.
      extraEnvironment ? { },
      grafana ? { },
      # Where Grafana finds the dashboard JSON files.
      dashboardsPath ? configs.dashboardsDir,
      # The host's effective settings (read back from `config` by the module) where the host's own
      # definitions win over the stack's defaults; absent on a fresh host, where ours apply.
      host ? { },
    }:
    let
      inherit (lib) mkDefault;
      defaults = builtins.mapAttrs (_: mkDefault);

      grafanaArgs = {
        adminPasswordFile = null;
        secretKeyFile = null;
        listenAddress = stack.bindAddress;
        openFirewall = false;
      }
      // grafana;

      unitOf = name: "${unitNames.${name}}.service";

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

      isIPv6 = address: builtins.match ".*:.*" address != null;
      # host:port as sockets and URLs want it: an IPv6 address in brackets.
      hostPort = address: port: "${if isIPv6 address then "[${address}]" else address}:${toString port}";
      # Where a local client reaches a server bound to `address`: a wildcard is reached over the
      # loopback of its family, a specific address at that address.
      reachAt =
        address:
        if address == "0.0.0.0" || address == "" then
          loopback
        else if address == "::" then
          "::1"
        else
          address;

      hostPrometheus = {
        listenAddress = loopback;
        port = services.prometheus.port;
        evaluationInterval = seconds stack.prometheus.evaluationIntervalSeconds;
      }
      // host.prometheus or { };
      ourGrafanaSecret = {
        secretKey = "$__file{${credential "secret-key"}}";
        adminPassword = "$__file{${credential "admin-password"}}";
      };
      hostGrafana = {
        address = grafanaArgs.listenAddress;
        port = services.grafana.port;
      }
      // ourGrafanaSecret
      // host.grafana or { };

      # Where each service answers, as the host really runs it.
      endpoints =
        genAttrs stack.activeServiceNames (name: {
          address = loopback;
          inherit (services.${name}) port;
        })
        // {
          warpwatch = {
            address = reachAt listenAddress;
            inherit (services.warpwatch) port;
          };
          prometheus = {
            address = reachAt hostPrometheus.listenAddress;
            inherit (hostPrometheus) port;
          };
          grafana = {
            address = reachAt hostGrafana.address;
            inherit (hostGrafana) port;
          };
        };
      urlOf = name: "http://${hostPort endpoints.${name}.address endpoints.${name}.port}";

      # The journal: the default one (`journalctl -u` works for every unit, nixpkgs' reload logic
      # finds its messages), bounded in files of the declared rotation size and in total by what
      # compose allows each service, at a priority any journald setting of the host wins over.
      journalLimits = ''
        SystemMaxFileSize=${toString stack.logging.maxSizeMiB}M
        SystemMaxFiles=${toString (stack.logging.maxFiles * builtins.length stack.activeServiceNames)}
        SystemMaxUse=${
          toString (
            stack.logging.maxSizeMiB * stack.logging.maxFiles * builtins.length stack.activeServiceNames
          )
        }M
      '';
      hostJournal = host.journaldExtraConfig or journalLimits;

      # Enough for thousands of idle keep-alive connections; systemd's default soft limit of 1024
      # is what a few hundred exhaust.
      openFiles = 65536;

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
              if reason=$(${warpwatch}/bin/warpwatch probe --timeout ${toString hc.timeoutSeconds} ${urlOf name}${service.healthPath} 2>&1); then
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

      # What a long-running daemon of the stack takes on top: its own IPC and mount namespace, no
      # writable-executable memory, network and local sockets only, the service syscall set. Go
      # programs list interfaces over netlink and raise their own file limit, so unlike warpwatch
      # they keep AF_NETLINK and @resources.
      daemonSandbox = sandbox // {
        AmbientCapabilities = "";
        PrivateIPC = true;
        PrivateMounts = true;
        MemoryDenyWriteExecute = true;
        RestrictAddressFamilies = [
          "AF_UNIX"
          "AF_NETLINK"
          "AF_INET"
          "AF_INET6"
        ];
        SystemCallFilter = [
          "@system-service"
          "~@privileged"
        ];
        SystemCallErrorNumber = "EPERM";
        DevicePolicy = "closed";
      };

      # Units a nixpkgs module defines (Prometheus, Loki, Grafana): the same sandbox as defaults,
      # so whatever that module sets itself (Grafana's AF_UNIX, capability for a port below 1024,
      # ProtectSystem = "full" with its state in /var/lib) and whatever the host sets both win.
      # Private users too: each runs as its module's static user.
      moduleSandbox = defaults (
        daemonSandbox
        // {
          PrivateUsers = true;
          RemoveIPC = true;
        }
      );

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
        "::1"
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
              WARPWATCH_ADDR = hostPort listenAddress services.warpwatch.port;
              WARPWATCH_DATA_DIR = services.warpwatch.dataDir;
              RUST_LOG = "info";
            }
            // extraEnvironment;
            serviceConfig = warpwatchHardening // {
              ExecStart = "${warpwatch}/bin/warpwatch";
              MemoryMax = "${toString services.warpwatch.memoryMiB}M";
              LimitNOFILE = openFiles;
              # The visits file lives here and survives rebuilds and reboots.
              StateDirectory = stateDirectoryOf "warpwatch";
              StateDirectoryMode = "0700";
              WorkingDirectory = services.warpwatch.dataDir;
              Restart = "always";
              RestartSec = "2s";
            };
          };
          networking.firewall.allowedTCPPorts = if openFirewall then [ services.warpwatch.port ] else [ ];
          warnings =
            (
              if
                openFirewall
                && builtins.elem listenAddress [
                  loopback
                  "::1"
                ]
              then
                [
                  "services.warpwatch.openFirewall opens port ${toString services.warpwatch.port}, but warpwatch listens on ${listenAddress} only; set services.warpwatch.listenAddress (e.g. \"0.0.0.0\" or \"::\") to expose it."
                ]
              else
                [ ]
            )
            ++ (
              if isLoopbackOrWildcard then
                [ ]
              else
                [
                  "services.warpwatch.listenAddress = ${builtins.toJSON listenAddress}: warpwatch answers on that address only, so the healthcheck and Prometheus reach it there (not on ${loopback}); use \"0.0.0.0\" or \"::\" (plus the firewall) to expose it on every interface."
                ]
            )
            ++ (
              if
                hostJournal == journalLimits
                || builtins.any (line: builtins.match "SystemMaxUse=.*" line != null) (
                  builtins.filter builtins.isString (builtins.split "\n" hostJournal)
                )
              then
                [ ]
              else
                [
                  "services.journald.extraConfig is set on this host without SystemMaxUse=, so it replaces the stack's journal limits (${
                    builtins.replaceStrings [ "\n" ] [ " " ] journalLimits
                  }): the journal may grow to journald's default (10% of the file system, at most 4G). Add the limits you want to services.journald.extraConfig."
                ]
            );
          assertions = [ ];
        }
        (healthcheck "warpwatch")
      ];

      # --- monitoring ---------------------------------------------------------------------------

      shipperUnitName = unitNames.${shipper};
      shipperStateDir = "/var/lib/${shipperUnitName}";
      shipperConfigText = toYAML (
        configs.promtail {
          target = "host";
          stateDir = shipperStateDir;
        }
      );
      shipperConfigPath = "${shipperUnitName}/promtail.yaml";

      shipperCommand = {
        promtail = "${promtail}/bin/promtail -config.file=/etc/${shipperConfigPath}";
        alloy = builtins.concatStringsSep " " [
          "${alloy}/bin/alloy run"
          "--config.format=promtail"
          "--server.http.listen-addr=${hostPort loopback services.alloy.port}"
          "--storage.path=${shipperStateDir}"
          "--disable-reporting"
          "/etc/${shipperConfigPath}"
        ];
      };
      shipperPackage = {
        inherit promtail alloy;
      };

      # Reads the whole default journal (the systemd-journal group) and writes its positions to
      # its state directory only.
      shipperUnit = {
        description = "${
          if shipper == "promtail" then "Promtail (end-of-life upstream)" else "Grafana Alloy"
        } shipping the journal to Loki";
        wantedBy = [ "multi-user.target" ];
        after = [
          "network.target"
          "loki.service"
        ];
        restartTriggers = [ shipperConfigText ];
        serviceConfig = daemonSandbox // {
          ExecStart = shipperCommand.${shipper};
          MemoryMax = "${toString services.${shipper}.memoryMiB}M";
          DynamicUser = true;
          # No PrivateUsers: a user namespace would leave the systemd-journal group unmapped.
          SupplementaryGroups = [ "systemd-journal" ];
          StateDirectory = shipperUnitName;
          Restart = "always";
          RestartSec = "2s";
          TimeoutStopSec = "10s";
        };
      };

      shipperFragment = {
        systemd.services =
          if shipperPackage.${shipper} == null then { } else { ${shipperUnitName} = shipperUnit; };
        assertions = [
          {
            assertion = shipperPackage.${shipper} != null;
            message =
              if shipper == "promtail" then
                "services.warpwatch.monitoring.logShipper = \"promtail\" needs services.warpwatch.monitoring.promtailPackage (nixpkgs 26.05 has no promtail; the flake's nixosModules.default sets it from nixos-25.11), or use logShipper = \"alloy\"."
              else
                "services.warpwatch.monitoring.logShipper = \"alloy\" needs services.warpwatch.monitoring.alloyPackage.";
          }
        ]
        ++ alloyPortProblems;
        warnings =
          if shipper == "promtail" then
            [
              "services.warpwatch.monitoring.logShipper = \"promtail\": Promtail is end-of-life upstream (the version is whatever nixos-25.11 ships, with no further upstream support), removed from nixpkgs 26.05. Switch to \"alloy\", which runs the same configuration."
            ]
          else
            [ ];
      };

      # The host's own services.alloy listens on Alloy's default 127.0.0.1:12345 unless its flags
      # say otherwise; two Alloys cannot bind one port.
      alloyDefaultPort = "12345";
      hostAlloy = {
        enable = false;
        extraFlags = [ ];
      }
      // host.alloy or { };
      hostAlloyPort =
        let
          flags = builtins.filter (flag: flag != null) (
            map (builtins.match "--server\\.http\\.listen-addr=.*:([0-9]+)") hostAlloy.extraFlags
          );
        in
        if flags == [ ] then alloyDefaultPort else builtins.head (builtins.head flags);
      alloyPortProblems =
        if shipper == "alloy" && hostAlloy.enable && hostAlloyPort == toString services.alloy.port then
          [
            {
              assertion = false;
              message = "services.alloy (this host's own Alloy) listens on port ${hostAlloyPort}, which the stack's shipper ${unitOf "alloy"} also needs: set services.warpwatch.monitoring.overrides.services.alloy.port to a free port, or move the host's Alloy with a --server.http.listen-addr= in services.alloy.extraFlags.";
            }
          ]
        else
          [ ];

      grafanaConfig = configs.grafana {
        target = "host";
        inherit dashboardsPath;
        urls = {
          prometheus = urlOf "prometheus";
          loki = urlOf "loki";
        };
      };
      # systemd copies the secret files into the unit's credentials directory, readable by Grafana's
      # user only; the files themselves may stay root:root 0400 and never enter the Nix store.
      credential = name: "/run/credentials/grafana.service/${name}";
      # A secret the host's own services.grafana.settings already provides wins; the file option
      # is then neither required nor used.
      secretFile =
        option: example: setting: ourValue: hostValue: value:
        if hostValue != ourValue then
          {
            credentials = [ ];
            problems = [ ];
            warnings =
              if value == null then
                [ ]
              else
                [
                  "services.warpwatch.grafana.${option} is not used: this host sets services.grafana.settings.security.${setting} itself, and the host's setting wins. Remove one of the two."
                ];
          }
        else
          {
            credentials = if value == null then [ ] else [ "${example}:${value}" ];
            warnings = [ ];
            problems =
              if value == null then
                [
                  "services.warpwatch.grafana.${option} must be set when services.warpwatch.monitoring.enable is true (or set services.grafana.settings.security.${setting} yourself): an absolute path to a root-readable file outside the Nix store (e.g. \"/run/secrets/grafana-${example}\"), created before the service starts."
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
          };
      secrets = [
        (secretFile "adminPasswordFile" "admin-password" "admin_password" ourGrafanaSecret.adminPassword
          hostGrafana.adminPassword
          grafanaArgs.adminPasswordFile
        )
        (secretFile "secretKeyFile" "secret-key" "secret_key" ourGrafanaSecret.secretKey
          hostGrafana.secretKey
          grafanaArgs.secretKeyFile
        )
      ];
      fromSecrets = what: builtins.concatMap (secret: secret.${what}) secrets;

      promConfig = configs.prometheus {
        target = "host";
        # Wired through services.prometheus.rules (checked by promtool at build time).
        ruleFiles = [ ];
      };
      # A host's Prometheus has jobs of its own ("prometheus" above all): ours get names of their
      # own, keep the `job` label the dashboards and rules select on, carry a `stack` label so no
      # series equals one of the host's, and scrape at the declared interval whatever the host's
      # global one is.
      scrapeConfigs = map (
        job:
        job
        // {
          job_name = "${stack.project}/${job.job_name}";
          scrape_interval = promConfig.global.scrape_interval;
          static_configs = [
            {
              targets = [ (hostPort endpoints.${job.job_name}.address endpoints.${job.job_name}.port) ];
              labels = {
                job = job.job_name;
                stack = stack.project;
              };
            }
          ];
        }
      ) promConfig.scrape_configs;

      monitoringServices = {
        # What the stack needs is on; the rest are defaults a host's Prometheus keeps its own
        # values for (its TSDB in stateDir above all).
        prometheus = {
          enable = true;
          inherit scrapeConfigs;
          rules = [ configs.rules ];
          globalConfig = defaults {
            inherit (promConfig.global) scrape_interval evaluation_interval;
          };
        }
        // defaults {
          listenAddress = loopback;
          port = services.prometheus.port;
          stateDir = stateDirectoryOf "prometheus";
          retentionTime = stack.prometheus.retention;
        };
        loki = {
          enable = true;
          dataDir = mkDefault services.loki.dataDir;
          configuration = configs.loki { target = "host"; };
        };
        grafana = {
          enable = true;
          # Opened when asked to; otherwise the host's own choice stands.
          openFirewall = if grafanaArgs.openFirewall then true else mkDefault false;
          settings = {
            server = defaults {
              http_addr = grafanaArgs.listenAddress;
              http_port = services.grafana.port;
            };
            security = defaults {
              admin_user = "admin";
              admin_password = ourGrafanaSecret.adminPassword;
              secret_key = ourGrafanaSecret.secretKey;
            };
            # Grafana 12 downloads plugins and polls for updates at start otherwise.
            analytics = defaults {
              reporting_enabled = false;
              check_for_updates = false;
              check_for_plugin_updates = false;
            };
            plugins.preinstall_disabled = mkDefault true;
          };
          provision = {
            enable = true;
            datasources.settings = grafanaConfig.datasources;
            dashboards.settings = grafanaConfig.dashboards;
          };
        };
      };

      hostWarnings =
        (
          if hostPrometheus.listenAddress != loopback && hostPrometheus.listenAddress != "::1" then
            [
              "services.prometheus.listenAddress = ${builtins.toJSON hostPrometheus.listenAddress} (this host's setting, which wins over the stack's ${loopback}): the stack's metrics and Prometheus' API are reachable from other machines unless the firewall blocks port ${toString hostPrometheus.port}."
            ]
          else
            [ ]
        )
        ++ (
          if hostPrometheus.evaluationInterval != promConfig.global.evaluation_interval then
            [
              "services.prometheus.globalConfig.evaluation_interval = ${builtins.toJSON hostPrometheus.evaluationInterval} (this host's setting) also evaluates the stack's rules, declared for ${promConfig.global.evaluation_interval}: its alerts fire correspondingly later."
            ]
          else
            [ ]
        );

      monitoringFragments = [
        {
          systemd.services = {
            prometheus.serviceConfig = moduleSandbox // {
              MemoryMax = mkDefault "${toString services.prometheus.memoryMiB}M";
            };
            loki.serviceConfig = moduleSandbox // {
              MemoryMax = mkDefault "${toString services.loki.memoryMiB}M";
              # nixpkgs' unit writes dataDir with ProtectSystem = "full"; should the host make it
              # strict, the data directory stays writable.
              ReadWritePaths = [ services.loki.dataDir ];
            };
            grafana.serviceConfig = moduleSandbox // {
              MemoryMax = mkDefault "${toString services.grafana.memoryMiB}M";
              ReadWritePaths = [ services.grafana.dataDir ];
              LoadCredential = fromSecrets "credentials";
            };
          };
          environment.etc.${shipperConfigPath}.text = shipperConfigText;
          assertions = map (message: {
            assertion = false;
            inherit message;
          }) (fromSecrets "problems");
          warnings =
            fromSecrets "warnings"
            ++ hostWarnings
            ++ (
              if grafanaArgs.openFirewall && grafanaArgs.listenAddress == loopback then
                [
                  "services.warpwatch.grafana.openFirewall opens port ${toString services.grafana.port}, but Grafana listens on ${loopback} only; set services.warpwatch.grafana.listenAddress (e.g. \"0.0.0.0\") to expose it."
                ]
              else
                [ ]
            );
        }
        shipperFragment
      ]
      ++ map healthcheck (builtins.filter (name: name != "warpwatch") stack.activeServiceNames);

      # The module applies these under mkIf; the module system must see their attribute names (down
      # to the options under `services`) without evaluating the declaration, whose overrides are
      # option values themselves. Hence a fixed skeleton filled from the merged fragments.
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
      # Applied whether or not services.warpwatch.enable is set.
      checks.assertions = [
        {
          assertion = enable || !monitoringEnable;
          message = "services.warpwatch.monitoring.enable is set but services.warpwatch.enable is not, so nothing would be deployed: set services.warpwatch.enable = true (the monitoring stack watches the service), or drop monitoring.enable.";
        }
      ];
      service = assemble serviceFragments // {
        services.journald.extraConfig = mkDefault journalLimits;
      };
      monitoring = assemble monitoringFragments // {
        services = {
          inherit (monitoringServices)
            prometheus
            loki
            grafana
            ;
        };
      };
    };
}
