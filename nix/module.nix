# services.warpwatch: the service and, optionally, its whole monitoring stack on this host.
# Thin on purpose: options here, every value from the stack declaration through the pure mapping
# in ./stack/nixos/ (evaluated offline by tests/nixos).
#
# A function of the flake's packages (`lib.modules.importApply ./nix/module.nix { packages =
# self.packages; }`, which is `nixosModules.default`), so the packages this flake builds are the
# option defaults; `import ./nix/module.nix { }` is the module without them.
{
  # packages.<system> of the flake, or null: then services.warpwatch.package must be set.
  packages ? null,
}:
{
  config,
  options,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib) mkOption types;
  cfg = config.services.warpwatch;
  nixpkgsOptions = import ./stack/nixos/nixpkgs-options.nix;
  # nixos-26.05's option names or master's `settings` ones, by what this nixpkgs declares.
  nixpkgsShape = nixpkgsOptions.shapeOf options;
  hostPrometheusGlobal =
    nixpkgsOptions.prometheusValue nixpkgsShape "global"
      config.services.prometheus;

  # The flake's packages for the host's system (read only when a default is).
  flakePackages = packages.${pkgs.stdenv.hostPlatform.system};

  # The declaration with the user's overrides; option defaults come from here. Without the
  # many-hosts fields: those are checked with their options below (`api`), since an override
  # such as role = "agent" is valid only together with the agent's options.
  declared =
    (import ./stack {
      overrides = builtins.removeAttrs cfg.monitoring.overrides [
        "role"
        "hosts"
        "receiver"
        "agent"
      ];
    }).stack;

  # services.warpwatch.monitoring.alerts in the declaration's shape: unset (null) fields left out,
  # so the declaration's defaults and its checks (nix/stack/validate.nix) apply.
  withoutNulls = lib.filterAttrs (_: value: value != null);
  alertsDeclared =
    let
      alerts = cfg.monitoring.alerts;
    in
    withoutNulls {
      receivers = lib.mapAttrs (
        _: receiver:
        lib.mapAttrs (_: withoutNulls) (withoutNulls {
          inherit (receiver) webhook email;
        })
      ) alerts.receivers;
      inherit (alerts) defaultReceiver pagingReceiver;
      routes = map withoutNulls alerts.routes;
    };

  # Many hosts: the options below in the declaration's shape (role, hosts, receiver, agent; unset
  # files left out so the declaration's checks name them). overrides win, as for alerts.
  monitoringCfg = cfg.monitoring;
  role = monitoringCfg.overrides.role or monitoringCfg.role;
  hostsDeclared = {
    inherit (monitoringCfg) role;
    hosts =
      withoutNulls { inherit (monitoringCfg.hosts) expected; }
      # The `host` label of this host's series: needed where hosts meet (an agent, a receiving
      # server); elsewhere a host name the declaration's rules refuse cannot fail a single host.
      // lib.optionalAttrs (role == "agent" || monitoringCfg.receiver.enable) {
        inherit (monitoringCfg.hosts) name;
      };
    receiver = {
      inherit (monitoringCfg.receiver) enable bindAddress port;
    }
    // withoutNulls {
      inherit (monitoringCfg.receiver)
        certFile
        keyFile
        clientCaFile
        crlFile
        ;
    };
    agent = withoutNulls {
      inherit (monitoringCfg.agent)
        serverAddress
        certFile
        keyFile
        caFile
        ;
    };
  };

  api = import ./stack {
    # Validation messages of those fields name the options above.
    hostsFieldPrefix = "services.warpwatch.monitoring.";
    overrides =
      lib.recursiveUpdate
        (lib.recursiveUpdate (lib.recursiveUpdate {
          alerts = alertsDeclared;
        } hostsDeclared) cfg.monitoring.overrides)
        {
          logShipper = cfg.monitoring.logShipper;
          services.warpwatch.port = cfg.port;
        };
  };

  # A secret file option: a string, so a path literal is a type error instead of a store copy.
  alertSecretFile =
    what:
    mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/keys/alertmanager-${what}";
      description = ''
        Absolute path of a file holding the ${what}, outside the Nix store; delivered to
        Alertmanager as a systemd credential (the file may stay `root:root 0400`).
      '';
    };

  webhookOptions = {
    url = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "URL of a webhook that carries no secret. One of `url` and `urlFile`.";
    };
    urlFile = alertSecretFile "webhook URL (it carries a token)";
  };

  emailOptions = {
    smarthost = mkOption {
      type = types.str;
      example = "smtp.example.org:587";
      description = "SMTP server as host:port.";
    };
    from = mkOption {
      type = types.str;
      description = "Sender address.";
    };
    to = mkOption {
      type = types.str;
      description = "Recipient address.";
    };
    requireTls = mkOption {
      type = types.bool;
      default = true;
      description = "Refuse to send without STARTTLS.";
    };
    authUsername = mkOption {
      type = types.nullOr types.str;
      default = null;
      description = "SMTP login; set together with `authPasswordFile`.";
    };
    authPasswordFile = alertSecretFile "SMTP password";
  };

  mapped = api.nixos {
    inherit lib;
    inherit (cfg) enable listenAddress openFirewall;
    monitoringEnable = cfg.monitoring.enable;
    warpwatch = cfg.package;
    promtail = cfg.monitoring.promtailPackage;
    alloy = cfg.monitoring.alloyPackage;
    systemd = pkgs.systemd;
    nginx = pkgs.nginx;
    receiverOpenFirewall = cfg.monitoring.receiver.openFirewall;
    extraEnvironment = cfg.environment;
    grafana = {
      inherit (cfg.grafana)
        adminPasswordFile
        secretKeyFile
        listenAddress
        openFirewall
        ;
    };
    # Read back where the host's own definitions win over the stack's defaults, so the probes,
    # scrape targets, datasources and warnings follow what really runs. Our own definitions of
    # these options are constants, so reading them here cannot loop.
    host = {
      prometheus = {
        # A Prometheus the host runs itself keeps nixpkgs' stateDir and listenAddress even where
        # the host never set them: its TSDB and its clients are there.
        enabledByHost = nixpkgsOptions.definedElsewhere (toString ./module.nix) options.services.prometheus.enable;
        inherit (config.services.prometheus) listenAddress port;
        evaluationInterval = hostPrometheusGlobal.evaluation_interval;
      };
      grafana = {
        address = config.services.grafana.settings.server.http_addr;
        port = config.services.grafana.settings.server.http_port;
        secretKey = config.services.grafana.settings.security.secret_key;
        adminPassword = config.services.grafana.settings.security.admin_password;
      };
      alloy = {
        inherit (config.services.alloy) enable extraFlags;
      };
      journal = nixpkgsOptions.journaldSettings nixpkgsShape config.services.journald;
      alertmanager = {
        inherit (config.services.prometheus.alertmanager)
          listenAddress
          port
          configuration
          configText
          ;
      };
      nodeExporter = {
        inherit (config.services.prometheus.exporters.node) listenAddress port;
      };
    };
    inherit nixpkgsShape;
  };

  secretFile =
    what:
    mkOption {
      type = types.nullOr types.str;
      default = null;
      example = "/run/secrets/grafana-${what}";
      description = ''
        Absolute path of a file holding the Grafana ${what}, read at service start through
        systemd credentials (so it may stay `root:root 0400`). A string, not a Nix path: a path
        literal would be copied into the world-readable Nix store. Required when
        {option}`services.warpwatch.monitoring.enable` is set.
      '';
    };

  # A TLS file of many hosts: a string, so a path literal is a type error instead of a store copy.
  tlsFileWith =
    more: what: example:
    mkOption {
      type = types.nullOr types.str;
      default = null;
      inherit example;
      description = ''
        Absolute path of the ${what}, outside the Nix store (a string, not a Nix path: a path
        literal would be copied into the world-readable store). Read at service start as a
        systemd credential, so it may stay `root:root 0400`.
      ''
      + lib.optionalString (more != "") "\n${more}";
    };
  tlsFile = tlsFileWith "";

  # Loopback by default: a service is exposed only on purpose (with its openFirewall option).
  listenAddressOption =
    what:
    mkOption {
      type = types.str;
      default = declared.bindAddress;
      defaultText = lib.literalMD "`bindAddress` of nix/stack/declaration.nix (`\"127.0.0.1\"`)";
      example = "0.0.0.0";
      description = "Address ${what} listens on. Loopback unless exposed on purpose.";
    };
in
{
  options.services.warpwatch = {
    enable = lib.mkEnableOption "warpwatch, the visit-counting web service";

    package = mkOption (
      {
        type = types.package;
        defaultText = lib.literalMD "`packages.<system>.warpwatch` of this flake (when the module is its `nixosModules.default`)";
        description = "The warpwatch package; its binary also runs every healthcheck probe.";
      }
      // lib.optionalAttrs (packages != null) { default = flakePackages.warpwatch; }
    );

    listenAddress = listenAddressOption "warpwatch";

    port = mkOption {
      type = types.port;
      default = declared.services.warpwatch.port;
      defaultText = lib.literalMD "`services.warpwatch.port` of nix/stack/declaration.nix";
      description = "TCP port of warpwatch (also scraped by Prometheus and probed by the healthcheck).";
    };

    openFirewall = mkOption {
      type = types.bool;
      default = false;
      description = "Open {option}`services.warpwatch.port` in the firewall.";
    };

    environment = mkOption {
      type = types.attrsOf types.str;
      default = { };
      example = {
        RUST_LOG = "debug";
      };
      description = "Extra environment of the warpwatch unit; overrides the generated variables.";
    };

    monitoring = {
      enable = lib.mkEnableOption "Prometheus, Loki, the log shipper and Grafana on this host, wired to warpwatch";

      logShipper = mkOption {
        type = types.enum [
          "promtail"
          "alloy"
        ];
        default = declared.logShipper;
        defaultText = lib.literalMD "`logShipper` of nix/stack/declaration.nix";
        description = ''
          `"promtail"` runs Promtail (end-of-life upstream; needs
          {option}`services.warpwatch.monitoring.promtailPackage`), `"alloy"` runs Grafana Alloy
          on the very same Promtail configuration; either in a hardened unit of the stack's own
          (`warpwatch-promtail` / `warpwatch-alloy`), so a host's {option}`services.alloy`
          pipeline is left as it is.
        '';
      };

      # Not mkPackageOption: nixpkgs 26.05 has no promtail to default to.
      promtailPackage = mkOption {
        type = types.nullOr types.package;
        default = if packages == null then null else flakePackages.promtail;
        defaultText = lib.literalMD "`packages.<system>.promtail` of this flake, from nixos-25.11 (when the module is its `nixosModules.default`), `null` otherwise";
        description = "Promtail package, used when `logShipper = \"promtail\"`. nixpkgs 26.05 has none.";
      };

      alloyPackage = lib.mkPackageOption pkgs "grafana-alloy" {
        extraDescription = ''
          Grafana Alloy for the stack's own shipper unit (used when `logShipper = "alloy"`); the
          host's {option}`services.alloy` stays the host's.
        '';
      };

      # Many hosts (README "Many hosts"): the declaration's role, hosts, receiver and agent,
      # typed; the declaration checks them and its messages name these options.
      role = mkOption {
        type = types.enum [
          "server"
          "agent"
        ];
        default = declared.role;
        defaultText = lib.literalMD "`role` of nix/stack/declaration.nix (`\"server\"`)";
        description = ''
          `"server"` runs the whole monitoring stack here (and, with
          {option}`services.warpwatch.monitoring.receiver.enable`, receives other hosts' metrics
          and logs); `"agent"` runs only warpwatch, the node exporter and the collectors
          (Prometheus in agent mode, the log shipper), which push to the server over mutual TLS.
          Nothing on an agent listens beyond loopback.
        '';
      };

      hosts = {
        name = mkOption {
          type = types.str;
          default = config.networking.hostName;
          defaultText = lib.literalExpression "config.networking.hostName";
          description = ''
            This host's name among many: the `host` label of every series and log line an agent
            pushes and of a receiving server's own series. Lower-case letters, digits, `.`, `-`
            or `_`.
          '';
        };
        expected = mkOption {
          type = types.nullOr (types.listOf types.str);
          default = null;
          example = [
            "app1"
            "app2"
          ];
          description = ''
            Server: the agents it expects to hear from. One that sends nothing for
            `hosts.silentForSeconds` raises HostSilent. Unset on a receiving server: a warning.
          '';
        };
      };

      receiver = {
        enable = lib.mkEnableOption "the receiver (a server's mutual-TLS endpoint for agents' remote write and log pushes)";
        bindAddress = mkOption {
          type = types.str;
          default = declared.receiver.bindAddress;
          defaultText = lib.literalMD "`receiver.bindAddress` of nix/stack/declaration.nix (`\"0.0.0.0\"`)";
          description = "Address the receiver listens on for agents.";
        };
        port = mkOption {
          type = types.port;
          default = declared.receiver.port;
          defaultText = lib.literalMD "`receiver.port` of nix/stack/declaration.nix";
          description = "TCP port the receiver listens on for agents.";
        };
        openFirewall = mkOption {
          type = types.bool;
          default = false;
          description = "Open {option}`services.warpwatch.monitoring.receiver.port` in the firewall.";
        };
        certFile = tlsFile "receiver's certificate" "/etc/warpwatch/tls/server.crt";
        keyFile = tlsFile "receiver's private key" "/run/keys/warpwatch/server.key";
        clientCaFile = tlsFile "CA certificate that signed the agents' client certificates" "/etc/warpwatch/tls/ca.crt";
        crlFile = tlsFileWith ''
          Optional: agents whose certificates it lists are refused. With a CA that signs the
          agents' certificates directly, the CA's CRL is enough; with intermediate CAs, one CRL
          per CA of the chain, concatenated. Once it is past its nextUpdate the receiver refuses
          every agent: re-issue it before then and restart `warpwatch-receiver.service` (the
          credential is copied at start).
        '' "revocation list (CRL, PEM) of the agents' CA" "/etc/warpwatch/tls/ca.crl";
      };

      agent = {
        serverAddress = mkOption {
          type = types.nullOr types.str;
          default = null;
          example = "monitor.example.org:8443";
          description = "An agent's server: its receiver as host:port.";
        };
        certFile = tlsFile "agent's client certificate" "/etc/warpwatch/tls/client.crt";
        keyFile = tlsFile "agent's client private key" "/run/keys/warpwatch/client.key";
        caFile = tlsFile "CA certificate that signed the server's certificate" "/etc/warpwatch/tls/ca.crt";
      };

      # The declaration's `alerts` (nix/stack/declaration.nix), typed; overrides.alerts wins.
      alerts = {
        receivers = mkOption {
          type = types.attrsOf (
            types.submodule {
              options = {
                webhook = mkOption {
                  type = types.nullOr (types.submodule { options = webhookOptions; });
                  default = null;
                  description = "A webhook receiver.";
                };
                email = mkOption {
                  type = types.nullOr (types.submodule { options = emailOptions; });
                  default = null;
                  description = "An e-mail receiver.";
                };
              };
            }
          );
          default = { };
          example = lib.literalExpression ''
            {
              oncall.webhook.urlFile = "/run/keys/oncall-url";
              mail.email = {
                smarthost = "smtp.example.org:587";
                from = "alerts@example.org";
                to = "ops@example.org";
                authUsername = "alerts";
                authPasswordFile = "/run/keys/smtp-password";
              };
            }
          '';
          description = ''
            Where the stack's alerts go, by receiver name, each with `webhook` or `email`. With
            none, alerts reach Alertmanager and go nowhere, and evaluation warns about it.
          '';
        };
        defaultReceiver = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "The receiver of every alert no route takes; null: the only receiver.";
        };
        pagingReceiver = mkOption {
          type = types.nullOr types.str;
          default = null;
          description = "Where `severity=\"page\"` alerts go; null: the default receiver.";
        };
        routes = mkOption {
          type = types.listOf (
            types.submodule {
              options = {
                receiver = mkOption {
                  type = types.str;
                  description = "A receiver of `receivers`.";
                };
                severity = mkOption {
                  type = types.nullOr (
                    types.enum [
                      "page"
                      "ticket"
                    ]
                  );
                  default = null;
                  description = "Alerts of this severity only.";
                };
                service = mkOption {
                  type = types.nullOr types.str;
                  default = null;
                  description = "Alerts of this service of the stack only.";
                };
              };
            }
          );
          default = [ ];
          description = "Routes tried in order before the paging one.";
        };
      };

      overrides = mkOption {
        # Deep-merged across modules like any NixOS option: attribute sets merge key by key, and
        # two different values for one key conflict unless priorities (mkForce ...) decide.
        type = types.attrsOf types.anything;
        default = { };
        example = {
          services.loki.memoryMiB = 1024;
          services.grafana.port = 3001;
        };
        description = ''
          Deep-merged into nix/stack/declaration.nix (ports, memory limits, rotation, healthcheck
          timings, ...), exactly as for the compose stack. Definitions from several modules merge
          key by key; invalid values fail evaluation with a message naming the field.
        '';
      };
    };

    grafana = {
      adminPasswordFile = secretFile "admin-password";
      secretKeyFile = secretFile "secret-key";

      listenAddress = listenAddressOption "Grafana";

      openFirewall = mkOption {
        type = types.bool;
        default = false;
        description = "Open Grafana's port in the firewall.";
      };
    };
  };

  config = lib.mkMerge [
    mapped.checks
    (lib.mkIf cfg.enable (
      lib.mkMerge [
        mapped.service
        (lib.mkIf cfg.monitoring.enable mapped.monitoring)
      ]
    ))
  ];
}
