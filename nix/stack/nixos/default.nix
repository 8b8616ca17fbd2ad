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
# Each concern is a file of this directory, a function of the `context` below returning a
# fragment of option values (one per service, plus the sandbox tiers, the host's effective
# settings and the healthcheck they share); this file assembles the fragments into the roles.
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
#   services.prometheus.enableReload              nixos/modules/services/monitoring/prometheus/default.nix
#   services.prometheus.retentionTime             nixos/modules/services/monitoring/prometheus/default.nix
#   services.prometheus.globalConfig              nixos/modules/services/monitoring/prometheus/default.nix
#   services.prometheus.scrapeConfigs             nixos/modules/services/monitoring/prometheus/default.nix
#   services.prometheus.ruleFiles                 nixos/modules/services/monitoring/prometheus/default.nix
#   services.prometheus.alertmanagers             nixos/modules/services/monitoring/prometheus/default.nix
#   services.prometheus.extraFlags                nixos/modules/services/monitoring/prometheus/default.nix
#   services.prometheus.enableAgentMode           nixos/modules/services/monitoring/prometheus/default.nix
#   services.prometheus.remoteWrite               nixos/modules/services/monitoring/prometheus/default.nix
#   services.loki.enable                          nixos/modules/services/monitoring/loki.nix
#   services.loki.dataDir                         nixos/modules/services/monitoring/loki.nix
#   services.loki.configuration (*)               nixos/modules/services/monitoring/loki.nix
#   services.grafana.enable                       nixos/modules/services/monitoring/grafana.nix
#   services.grafana.openFirewall                 nixos/modules/services/monitoring/grafana.nix
#   services.grafana.settings (*)                 nixos/modules/services/monitoring/grafana.nix
#   services.grafana.provision.enable             nixos/modules/services/monitoring/grafana.nix
#   services.grafana.provision.datasources.settings  nixos/modules/services/monitoring/grafana.nix
#   services.grafana.provision.dashboards.settings   nixos/modules/services/monitoring/grafana.nix
#   services.prometheus.alertmanager.enable       nixos/modules/services/monitoring/prometheus/alertmanager.nix
#   services.prometheus.alertmanager.configuration  nixos/modules/services/monitoring/prometheus/alertmanager.nix
#   services.prometheus.alertmanager.extraFlags   nixos/modules/services/monitoring/prometheus/alertmanager.nix
#   services.prometheus.alertmanager.listenAddress  nixos/modules/services/monitoring/prometheus/alertmanager.nix
#   services.prometheus.alertmanager.port         nixos/modules/services/monitoring/prometheus/alertmanager.nix
#   services.prometheus.exporters.node.enable     nixos/modules/services/monitoring/prometheus/exporters.nix
#   services.prometheus.exporters.node.listenAddress  nixos/modules/services/monitoring/prometheus/exporters.nix
#   services.prometheus.exporters.node.port       nixos/modules/services/monitoring/prometheus/exporters.nix
# On nixpkgs master (26.11), where the evaluated options have `settings` (./nixpkgs-options.nix
# picks the names), these replace services.journald.extraConfig and the services.prometheus
# options above but enable, enableReload, enableAgentMode, extraFlags, listenAddress, port,
# stateDir, alertmanager.* and exporters.* (checked against master's modules):
#   services.journald.settings.Journal (*)        nixos/modules/system/boot/systemd/journald.nix
#   services.prometheus.settings.global (*)       nixos/modules/services/monitoring/prometheus/default.nix
#   services.prometheus.settings.scrape_configs   nixos/modules/services/monitoring/prometheus/default.nix
#   services.prometheus.settings.rule_files       nixos/modules/services/monitoring/prometheus/default.nix
#   services.prometheus.settings.storage.tsdb.retention.time  nixos/modules/services/monitoring/prometheus/default.nix
#   services.prometheus.settings.alerting.alertmanagers  nixos/modules/services/monitoring/prometheus/default.nix
#   services.prometheus.settings.remote_write     nixos/modules/services/monitoring/prometheus/default.nix
# services.promtail is NOT used (nixos-26.05 removed it), nor services.alloy (the host's own
# pipeline may live there): the log shipper runs in a unit of its own, `unitNames.<shipper>`.
{
  stack,
  configs,
  toYAML,
}:
let
  inherit (import ../lib.nix) concatMerge genAttrs;
  nixpkgsOptions = import ./nixpkgs-options.nix;

  # The shipper and the receiver run in units of the stack's own (nixpkgs 26.05 has no Promtail
  # module, services.alloy and services.nginx belong to the host, which may run its own there);
  # every other unit is the one its nixpkgs module (or this mapping, for warpwatch) defines. An
  # agent's collector is nixpkgs' Prometheus in agent mode.
  unitNames = genAttrs stack.activeServiceNames (
    name:
    if name == stack.logShipper || name == "receiver" then
      "${stack.project}-${name}"
    else if name == "node-exporter" then
      "prometheus-node-exporter"
    else if name == "collector" then
      "prometheus"
    else
      name
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
      # Store path of nginx, the server's receiver (read only when receiver.enable is set).
      nginx ? null,
      # Open receiver.port in the firewall (the receiver's listener for agents).
      receiverOpenFirewall ? false,
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
      # Which option tree nixpkgs declares (./nixpkgs-options.nix `shapeOf options`): nixos-26.05's
      # unless the module says otherwise.
      nixpkgsShape ? nixpkgsOptions.nixos2605,
    }:
    let
      inherit (lib) mkDefault mkIf;

      # What every concern file is given: the stack, the arguments above, and what the concerns
      # share. Each file names the parts it reads; the shared parts are evaluated on first use.
      context = {
        inherit
          stack
          configs
          toYAML
          unitNames
          mkDefault
          mkIf
          warpwatch
          promtail
          alloy
          systemd
          nginx
          receiverOpenFirewall
          listenAddress
          openFirewall
          extraEnvironment
          dashboardsPath
          host
          nixpkgsShape
          nixpkgsOptions
          ;
        defaults = builtins.mapAttrs (_: mkDefault);

        grafana = {
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
            parts = builtins.match "/var/lib/(.+)" stack.services.${name}.dataDir;
          in
          if parts == null then
            throw "warpwatch stack: services.${name}.dataDir must be under /var/lib on a NixOS host (got ${
              builtins.toJSON stack.services.${name}.dataDir
            })"
          else
            builtins.head parts;

        inherit (import ./sandbox.nix context)
          sandbox
          daemonSandbox
          moduleSandbox
          warpwatchHardening
          ;
        inherit (import ./host.nix context)
          hostPort
          ourGrafanaSecret
          hostPrometheus
          hostGrafana
          hostAlertmanager
          endpoints
          urlOf
          ;
        healthcheck = import ./healthcheck.nix context;
      };

      concern = file: import file context;

      # A role: the fragments of its concerns, merged in this order (lists such as `warnings`
      # concatenate in it), and the `services.<name>` options it sets. Another service is a file
      # here added to a role (with its nixpkgs option under serviceOptions); another role is
      # another entry, applied by nix/module.nix under its own condition.
      roles = {
        # What the service needs on its own.
        service = {
          fragments = [
            (concern ./warpwatch.nix)
            (concern ./journal.nix)
            (context.healthcheck "warpwatch")
          ];
          serviceOptions = [ "journald" ];
        };
        # The monitoring stack beside it, each service with its healthcheck: a server's whole
        # stack (with the receiver when agents push to it), or an agent's collectors.
        monitoring = {
          fragments =
            map concern (
              if stack.role == "agent" then
                [
                  ./collector.nix
                  ./shipper.nix
                  ./node-exporter.nix
                ]
              else
                [
                  ./grafana-secrets.nix
                  ./prometheus.nix
                  ./loki.nix
                  ./grafana.nix
                  ./shipper.nix
                  ./alertmanager.nix
                  ./node-exporter.nix
                ]
                ++ (if stack.receiver.enable then [ ./receiver.nix ] else [ ])
            )
            ++ map context.healthcheck (builtins.filter (name: name != "warpwatch") stack.activeServiceNames)
            ++ [ { inherit (stack) warnings; } ];
          # Fixed whatever the role: the module system reads these names before the role.
          serviceOptions = [
            "prometheus"
            "loki"
            "grafana"
          ];
        };
      };

      # The module applies these under mkIf; the module system must see their attribute names (down
      # to the options under `services`) without evaluating the declaration, whose overrides are
      # option values themselves. Hence a fixed skeleton filled from the merged fragments.
      assemble =
        { fragments, serviceOptions }:
        let
          merged = builtins.foldl' concatMerge { } fragments;
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
          services = genAttrs serviceOptions (name: merged.services.${name} or { });
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
      service = assemble roles.service;
      monitoring = assemble roles.monitoring;
    };
}
