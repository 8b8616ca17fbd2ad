# The docker-compose project: the compose document plus every file it mounts, keyed by path
# relative to the project directory. Compose-spec (no `version:`); accepted by docker-compose v1
# and docker compose v2.
#
# Every image's entrypoint is its tool's binary (as in the upstream images), so `command` carries
# arguments only; every image ships /bin/warpwatch for the healthcheck probe (images have no wget).
{
  stack,
  configs,
  toYAML,
}:
let
  inherit (import ../lib.nix)
    genAttrs
    listenAddress
    loopback
    prefixNames
    seconds
    ;
  inherit (stack) logging healthcheck containerLogs;
  inherit (builtins) listToAttrs;

  # An agent's containers share the host's network namespace and every one of them listens on
  # loopback only: nothing of an agent is reachable from another machine, the node exporter
  # counts the host's own interfaces, the collectors reach their targets on 127.0.0.1 and the
  # server by the host's routes, and warpwatch answers on the host's 127.0.0.1 as it does on a
  # server (where it is published there).
  isAgent = stack.role == "agent";
  # Where an agent's collectors find client.crt, client.key and ca.crt: compose secrets, bind
  # mounts of the files alone (their directory's permissions do not matter, their own do).
  agentTlsDir = "/run/secrets";

  # Not rendered: `apps.stack` (the flake) generates them on first use, mode 0600.
  grafanaSecrets = [
    {
      name = "grafana-admin-password";
      variable = "GF_SECURITY_ADMIN_PASSWORD";
    }
    {
      name = "grafana-secret-key";
      variable = "GF_SECURITY_SECRET_KEY";
    }
  ];
  secretNames = map (secret: secret.name) grafanaSecrets;

  # The receivers' secret files (webhook URLs, SMTP passwords), mounted from where the user keeps
  # them: the compose file names the files, never their contents.
  alertmanagerSecrets = configs.alertmanager.secrets;

  # The receiver's certificate, key, client CA (and CRL) under the names ./nginx.nix reads in
  # `tlsDir`.
  receiverSecrets =
    if builtins.elem "receiver" stack.activeServiceNames then
      map (file: { inherit (file) name file; }) (import ./receiver-tls.nix stack)
    else
      [ ];

  # An agent's client certificate, key and the CA of the server's certificate, under the names
  # ./agent-tls.nix reads in a TLS directory.
  agentSecrets =
    if isAgent then
      [
        {
          name = "client.crt";
          file = stack.agent.certFile;
        }
        {
          name = "client.key";
          file = stack.agent.keyFile;
        }
        {
          name = "ca.crt";
          file = stack.agent.caFile;
        }
      ]
    else
      [ ];

  # Prometheus 3 runs agent mode with --agent (the feature flag of 2.x is gone); 2.x from 2.32
  # with --enable-feature=agent. The collector's image tag is its package's version (image-specs
  # sets it), so the flag follows the binary the image really holds.
  agentModeFlag =
    let
      major = builtins.match "v?([0-9]+)[.].*" stack.services.collector.image.tag;
    in
    if major != null && builtins.fromJSON (builtins.head major) < 3 then
      "--enable-feature=agent"
    else
      "--agent";

  volumeOf = name: "${name}-data";
  portOf = name: toString stack.services.${name}.port;
  # Inside its container a service listens on every interface, so the published port reaches it.
  # On an agent, loopback of the host's network namespace.
  listenOn =
    name: "${if isAgent then loopback else listenAddress "compose.file" "compose"}:${portOf name}";

  # The shipper's uid (0, see declaration.nix `containerLogs`) is its service record's, like
  # every other container's.
  shipper = {
    volumes = [
      "${containerLogs.hostDir}:${containerLogs.hostDir}:ro"
      "./promtail:/etc/promtail:ro"
    ];
  };

  # What differs between services: how each tool is told where its config and state live.
  specific = {
    warpwatch = service: {
      environment = {
        WARPWATCH_ADDR = listenOn "warpwatch";
        WARPWATCH_DATA_DIR = service.dataDir;
        RUST_LOG = "info";
      };
    };
    prometheus = service: {
      command = [
        "--config.file=/etc/prometheus/prometheus.yml"
        "--storage.tsdb.path=${service.dataDir}"
        "--storage.tsdb.retention.time=${stack.prometheus.retention}"
        "--web.listen-address=${listenOn "prometheus"}"
      ]
      # Agents' samples arrive through the receiver (nginx), the only way in from other hosts.
      ++ (if stack.receiver.enable then [ "--web.enable-remote-write-receiver" ] else [ ]);
      volumes = [ "./prometheus:/etc/prometheus:ro" ];
    };
    loki = _: {
      command = [ "-config.file=/etc/loki/loki.yml" ];
      volumes = [ "./loki:/etc/loki:ro" ];
    };
    promtail =
      _:
      shipper
      // {
        command = [ "-config.file=/etc/promtail/promtail.yml" ];
      }
      // (if isAgent then { secrets = map (secret: secret.name) agentSecrets; } else { });
    alloy =
      service:
      shipper
      // {
        command = [
          "run"
          "--config.format=promtail"
          "--server.http.listen-addr=${listenOn "alloy"}"
          "--storage.path=${service.dataDir}"
          "--disable-reporting"
          "/etc/promtail/promtail.yml"
        ];
      }
      // (if isAgent then { secrets = map (secret: secret.name) agentSecrets; } else { });
    # Prometheus in agent mode (./agent-prometheus.nix): scrapes on loopback, keeps what the
    # server has not acknowledged in its WAL on the volume, remote-writes over mutual TLS.
    collector = service: {
      command = [
        agentModeFlag
        "--config.file=/etc/prometheus/prometheus.yml"
        "--storage.agent.path=${service.dataDir}"
        "--web.listen-address=${listenOn "collector"}"
      ];
      volumes = [ "./collector:/etc/prometheus:ro" ];
      secrets = map (secret: secret.name) agentSecrets;
    };
    alertmanager =
      service:
      {
        command = [
          "--config.file=/etc/alertmanager/alertmanager.yml"
          # Silences and the notification log: on the volume, so they survive restarts.
          "--storage.path=${service.dataDir}"
          "--web.listen-address=${listenOn "alertmanager"}"
          # One instance: no gossip listener (it would open port 9094 on every interface).
          "--cluster.listen-address="
        ];
        volumes = [ "./alertmanager:/etc/alertmanager:ro" ];
      }
      // (
        if alertmanagerSecrets != [ ] then
          { secrets = map (secret: secret.name) alertmanagerSecrets; }
        else
          { }
      );
    # The host as the node exporter sees it: its /proc, /sys and / read-only, each named by a
    # --path flag, so the exporter reports the host's CPUs, memory, load, disks and file systems
    # (mount points as the host names them). No privileges, no capability, and neither the
    # host's PID namespace (the host's /proc already lists the host's processes) nor its network
    # namespace: the latter is what the network collector would need to count the host's
    # interfaces instead of its own container's, and it would take the exporter off the stack's
    # network onto the host's, where Prometheus cannot reach a loopback listener. See the live
    # test's network measurement (tests/live/test_live_alerts.py).
    node-exporter = _: {
      command = [
        "--path.procfs=/host/proc"
        "--path.sysfs=/host/sys"
        "--path.rootfs=/host/root"
        "--web.listen-address=${listenOn "node-exporter"}"
      ];
      volumes = [
        "/proc:/host/proc:ro"
        "/sys:/host/sys:ro"
        # Not rslave (file systems mounted later would show up without a restart): Docker refuses
        # it where the host's / is a private mount, as in containers and some CI machines.
        "/:/host/root:ro"
      ];
    };
    # The receiver's TLS files, mounted as compose secrets from where the user keeps them; its
    # mutual-TLS listener is the one port published beyond loopback, on purpose.
    receiver = service: {
      command = [
        "-e"
        "stderr"
        "-c"
        "/etc/nginx/nginx.conf"
      ];
      volumes = [ "./receiver:/etc/nginx:ro" ];
      secrets = map (secret: secret.name) receiverSecrets;
      ports = [
        "${stack.receiver.bindAddress}:${toString stack.receiver.port}:${toString stack.receiver.port}"
      ];
      networks = [
        "internal"
        "edge"
      ];
    };
    grafana = service: {
      environment = {
        GF_PATHS_DATA = service.dataDir;
        GF_PATHS_LOGS = "${service.dataDir}/log";
        GF_PATHS_PLUGINS = "${service.dataDir}/plugins";
        GF_PATHS_PROVISIONING = "/etc/grafana/provisioning";
        GF_SERVER_HTTP_PORT = portOf "grafana";
        # Offline and reproducible: Grafana 12 otherwise installs plugins from grafana.com at
        # start and polls it for Grafana and plugin updates.
        GF_ANALYTICS_REPORTING_ENABLED = "false";
        GF_ANALYTICS_CHECK_FOR_UPDATES = "false";
        GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES = "false";
        GF_PLUGINS_PREINSTALL_DISABLED = "true";
      }
      # `*__FILE` variables are read by the shell entrypoint of Grafana's upstream image, not by
      # the binary our image starts; the binary expands `$__file{PATH}` in any setting. `$$` is
      # compose's escape for a literal `$`.
      // listToAttrs (
        map (secret: {
          name = secret.variable;
          value = "$$__file{/run/secrets/${secret.name}}";
        }) grafanaSecrets
      );
      secrets = secretNames;
      volumes = [
        "./grafana/provisioning:/etc/grafana/provisioning:ro"
        "./grafana/dashboards:/etc/grafana/dashboards:ro"
      ];
    };
  };

  renderService =
    name:
    let
      service = stack.services.${name};
      memory = "${toString service.memoryMiB}m";
      extra = specific.${name} service;
      base = {
        image = "${service.image.name}:${service.image.tag}";
        user = "${toString service.uid}:${toString service.uid}";
        inherit (stack) restart;
        read_only = true;
        tmpfs = [ "/tmp" ];
        cap_drop = [ "ALL" ];
        security_opt = [ "no-new-privileges:true" ];
        # docker-compose v1 honours mem_limit, docker compose v2 honours both; they agree.
        mem_limit = memory;
        deploy = {
          resources = {
            limits = {
              inherit memory;
            };
          };
        };
        logging = {
          inherit (logging) driver;
          options = {
            max-size = "${toString logging.maxSizeMiB}m";
            max-file = toString logging.maxFiles;
            tag = service.logTag;
          };
        };
        healthcheck = {
          test =
            if service.healthcheckTest != [ ] then
              service.healthcheckTest
            else
              [
                "CMD"
                "/bin/warpwatch"
                "probe"
                service.healthUrl
              ];
          interval = seconds healthcheck.intervalSeconds;
          timeout = seconds healthcheck.timeoutSeconds;
          inherit (healthcheck) retries;
          start_period = seconds service.startPeriodSeconds;
        };
      }
      // (
        if isAgent then
          { network_mode = "host"; }
        else
          { networks = [ "internal" ] ++ (if service.published then [ "edge" ] else [ ]); }
      );
    in
    base
    // extra
    // {
      volumes = [ "${volumeOf name}:${service.dataDir}" ] ++ (extra.volumes or [ ]);
    }
    // (
      if service.published && !isAgent then
        { ports = [ "${stack.bindAddress}:${portOf name}:${portOf name}" ]; }
      else
        { }
    )
    // (
      if service.dependsOn != [ ] then
        {
          depends_on = genAttrs service.dependsOn (_: {
            condition = "service_healthy";
          });
        }
      else
        { }
    );

  mountedSecrets = listToAttrs (
    map (secret: {
      inherit (secret) name;
      value.file = secret.file;
    }) (agentSecrets ++ alertmanagerSecrets ++ receiverSecrets)
  );

  file = {
    services = genAttrs stack.activeServiceNames renderService;
    volumes = genAttrs (map volumeOf stack.activeServiceNames) (_: { });
  }
  // (
    if isAgent then
      { secrets = mountedSecrets; }
    else
      {
        networks = {
          # No route out: Prometheus, Loki and the shipper only talk to each other.
          internal = {
            internal = true;
          };
          # Published services also join a regular bridge so their ports can be bound on the host.
          edge = { };
        };
        secrets =
          genAttrs secretNames (name: {
            file = "./secrets/${name}";
          })
          // mountedSecrets;
      }
  );

  grafana = configs.grafana { target = "compose"; };

  # An agent mounts its collectors' configurations only.
  agentFiles = {
    "collector/prometheus.yml" = toYAML (configs.agentPrometheus { tlsDir = agentTlsDir; });
    "promtail/promtail.yml" = toYAML (
      configs.promtail {
        target = "compose";
        tlsDir = agentTlsDir;
      }
    );
  };

  serverFiles = {
    "prometheus/prometheus.yml" = toYAML (configs.prometheus { target = "compose"; });
    "prometheus/rules.yml" = configs.rules;
    "alertmanager/alertmanager.yml" = toYAML (configs.alertmanager { target = "compose"; });
    "loki/loki.yml" = toYAML (configs.loki { target = "compose"; });
  }
  // (
    if builtins.elem "receiver" stack.activeServiceNames then
      {
        "receiver/nginx.conf" = configs.nginx {
          target = "compose";
          tlsDir = "/run/secrets";
          stateDir = stack.services.receiver.dataDir;
        };
      }
    else
      { }
  )
  // {
    "promtail/promtail.yml" = toYAML (configs.promtail { target = "compose"; });
    "grafana/provisioning/datasources/datasources.yml" = toYAML grafana.datasources;
    "grafana/provisioning/dashboards/dashboards.yml" = toYAML grafana.dashboards;
    # Grafana logs an error on every start for each provisioning directory that is missing; these
    # two provision nothing.
    "grafana/provisioning/alerting/alerting.yml" = toYAML { apiVersion = 1; };
    "grafana/provisioning/plugins/plugins.yml" = toYAML {
      apiVersion = 1;
      apps = [ ];
    };
  }
  // prefixNames "grafana/dashboards/" configs.dashboardFiles;

  startIntervalFile = "docker-compose.start-interval.yml";
in
{
  inherit file startIntervalFile;
  project = {
    "docker-compose.yml" =
      "# Generated from nix/stack/declaration.nix (scripts/render-compose); edit the declaration.\n"
      + toYAML file;
    # Added by nix run .#stack on Docker Engine 25+ (API 1.44) only: docker-compose v1 and older
    # engines refuse the key, and the CI engine is 20.10.
    ${startIntervalFile} =
      "# Generated from nix/stack/declaration.nix; used only with Docker Engine 25 or newer.\n"
      + toYAML {
        services = genAttrs stack.activeServiceNames (_: {
          healthcheck.start_interval = seconds healthcheck.startIntervalSeconds;
        });
      };
  }
  // (if isAgent then agentFiles else serverFiles);
}
