# The log shipper's configuration, in Promtail's format (Alloy runs the same file with
# --config.format=promtail). Compose: the json-file logs of the stack's containers, labelled by
# `service` from the logging tag. Host: the systemd journal, labelled by `unit`.
# Both pipelines end with the stages that give every line one `level` label (see levelStages).
stack:
{
  target,
  # Journals to read on a host, one scrape job per path. The NixOS module reads only the default
  # journal; more paths are for hosts that keep other journals (e.g. ones received remotely).
  journalPaths ? [ "/var/log/journal" ],
  # Writable directory for positions.yaml (the shipper's state directory).
  stateDir ? stack.services.${stack.logShipper}.dataDir,
  # Host: the unit each service runs in, where it is not the service's name (the NixOS mapping's
  # shipper unit, warpwatch-promtail): its lines get the compose service name all the same.
  unitNames ? { },
  # Agent: where the TLS files are (see ./agent-tls.nix).
  tlsDir ? null,
}:
let
  inherit (import ../lib.nix) addressOf listenAddress loopback;
  address = addressOf "configs.promtail" target;
  loki = stack.services.loki;

  # One `level` label for every service, lower case, from a bounded set of values: logfmt
  # `level=info` (Prometheus, Loki, Promtail, Alloy, Grafana; Prometheus 3 writes `level=INFO`),
  # then pretty_env_logger's ` INFO target > message` (warpwatch, level right-aligned to five
  # columns), which wins when both match because it is the line's own prefix.
  levelStages = [
    {
      regex = {
        expression = "(?:^|\\s)level=(?P<level>(?i:trace|debug|info|warn|warning|error|critical|fatal|panic))\\b";
      };
    }
    {
      regex = {
        expression = "^\\s*(?P<level>TRACE|DEBUG|INFO|WARN|ERROR)\\s";
      };
    }
    {
      template = {
        source = "level";
        template = "{{ if eq (ToLower .Value) \"warning\" }}warn{{ else }}{{ ToLower .Value }}{{ end }}";
      };
    }
    {
      labels = {
        level = "level";
      };
    }
  ];

  containerJob = {
    job_name = "containers";
    static_configs = [
      {
        targets = [ "localhost" ];
        labels = {
          job = "containers";
          __path__ = "${stack.containerLogs.hostDir}/*/*-json.log";
        };
      }
    ];
    pipeline_stages = [
      {
        json = {
          expressions = {
            output = "log";
            stream = "stream";
            time = "time";
            tag = "attrs.tag";
          };
        };
      }
      {
        regex = {
          source = "tag";
          expression = "^${stack.project}/(?P<service>[a-z0-9_-]+)$";
        };
      }
      {
        labels = {
          service = "service";
          stream = "stream";
        };
      }
      # Containers of other projects on the same host carry no matching tag: not ours to ship.
      {
        match = {
          selector = "{job=\"containers\", service=\"\"}";
          action = "drop";
          drop_counter_reason = "not_in_stack";
        };
      }
      # The file target labels every line with its path, which holds the container id: each
      # recreated container would start new streams.
      { labeldrop = [ "filename" ]; }
      {
        timestamp = {
          source = "time";
          format = "RFC3339Nano";
        };
      }
      # dockerd keeps the program's newline in `log`.
      {
        template = {
          source = "output";
          template = "{{ TrimRight .Value \"\\r\\n\" }}";
        };
      }
      {
        output = {
          source = "output";
        };
      }
    ]
    ++ levelStages;
  };

  journalJob = index: path: {
    job_name = "journal-${toString index}";
    journal = {
      inherit path;
      max_age = "${toString stack.journal.maxAgeHours}h";
      labels = {
        job = "systemd-journal";
      };
    };
    relabel_configs = [
      {
        source_labels = [ "__journal__systemd_unit" ];
        target_label = "unit";
      }
      # `service` as in compose (warpwatch.service → warpwatch), so one logs dashboard serves both.
      {
        source_labels = [ "__journal__systemd_unit" ];
        regex = "(.+)\\.service";
        target_label = "service";
      }
    ]
    # A unit named otherwise is labelled with its service's name, as in compose, so one query
    # finds the shipper's own lines on both targets.
    ++ builtins.concatMap (
      name:
      if unitNames.${name} == name then
        [ ]
      else
        [
          {
            source_labels = [ "__journal__systemd_unit" ];
            regex = builtins.replaceStrings [ "." ] [ "\\." ] "${unitNames.${name}}.service";
            target_label = "service";
            replacement = name;
          }
        ]
    ) (builtins.attrNames unitNames);
    pipeline_stages = levelStages;
  };
in
{
  server = {
    # An agent's shipper shares its network namespace with the collector: loopback only.
    http_listen_address =
      if stack.role == "agent" then loopback else listenAddress "configs.promtail" target;
    http_listen_port = stack.services.promtail.port;
    # Promtail needs no gRPC server, but always starts one: a free port on loopback only.
    grpc_listen_address = loopback;
    grpc_listen_port = 0;
  };
  positions = {
    filename = "${stateDir}/positions.yaml";
  };
  clients = [
    (
      if stack.role == "agent" then
        {
          # Loki's push path on the server's receiver; every line carries this host's name.
          url = "https://${stack.agent.serverAddress}/loki/api/v1/push";
          external_labels.host = stack.hosts.name;
          # Promtail's default gives up on a batch after 10 retries (about 8.5 min of backoff),
          # dropping its lines. Retrying every 10 s at most, 1000 times, outlasts a server
          # outage of over 2 h; meanwhile the tailers wait, so nothing read is lost.
          backoff_config = {
            min_period = "500ms";
            max_period = "10s";
            max_retries = 1000;
          };
          tls_config =
            let
              tls = import ./agent-tls.nix stack tlsDir;
            in
            {
              cert_file = tls.certFile;
              key_file = tls.keyFile;
              ca_file = tls.caFile;
            };
        }
      else
        {
          url = "http://${address "loki"}:${toString loki.port}/loki/api/v1/push";
        }
    )
  ];
  scrape_configs =
    if target == "compose" then
      [ containerJob ]
    else
      builtins.genList (index: journalJob index (builtins.elemAt journalPaths index)) (
        builtins.length journalPaths
      );
}
