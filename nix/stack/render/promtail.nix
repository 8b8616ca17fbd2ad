# The log shipper's configuration, in Promtail's format (Alloy runs the same file with
# --config.format=promtail). Compose: the json-file logs of the stack's containers, labelled by
# `service` from the logging tag. Host: the systemd journal, labelled by `unit`.
# Both pipelines end with a stage that lifts the pretty_env_logger level word into a `level` label.
stack:
{
  target,
  # Journals to read on a host: one scrape job per path, so per-service journald namespaces
  # (`/var/log/journal/<machine-id>.<namespace>`) can be listed next to the default journal.
  journalPaths ? [ "/var/log/journal" ],
  # Writable directory for positions.yaml (the shipper's state directory).
  stateDir ? stack.services.${stack.logShipper}.dataDir,
}:
let
  inherit (import ../lib.nix) addressOf listenAddress;
  address = addressOf "configs.promtail" target;
  loki = stack.services.loki;

  # pretty_env_logger writes ` INFO target > message` (level right-aligned to five columns).
  levelStages = [
    {
      regex = {
        expression = "^\\s*(?P<level>TRACE|DEBUG|INFO|WARN|ERROR)\\s";
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
      {
        timestamp = {
          source = "time";
          format = "RFC3339Nano";
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
    ];
    pipeline_stages = levelStages;
  };
in
{
  server = {
    http_listen_address = listenAddress "configs.promtail" target;
    http_listen_port = stack.services.promtail.port;
    grpc_listen_port = 0;
  };
  positions = {
    filename = "${stateDir}/positions.yaml";
  };
  clients = [
    {
      url = "http://${address "loki"}:${toString loki.port}/loki/api/v1/push";
    }
  ];
  scrape_configs =
    if target == "compose" then
      [ containerJob ]
    else
      builtins.genList (index: journalJob index (builtins.elemAt journalPaths index)) (
        builtins.length journalPaths
      );
}
