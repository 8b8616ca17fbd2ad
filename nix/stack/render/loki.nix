# Single-node Loki 3.x: filesystem storage, tsdb index with schema v13, retention applied by the
# compactor, usage reporting off. Keys follow upstream's cmd/loki/loki-local-config.yaml.
stack:
{
  target,
  # Loki's state directory (chunks, index, compactor); the NixOS module's dataDir on a host.
  dataDir ? stack.services.loki.dataDir,
}:
let
  inherit (import ../lib.nix) listenAddress loopback;
  listen = listenAddress "configs.loki" target;
in
{
  auth_enabled = false;
  server = {
    http_listen_address = listen;
    http_listen_port = stack.services.loki.port;
    # Single node: only Loki itself dials its gRPC server (common.instance_addr), so it never
    # listens beyond loopback, on a host or in a container.
    grpc_listen_address = loopback;
    grpc_listen_port = stack.services.loki.grpcPort;
    log_level = "info";
  };
  common = {
    instance_addr = loopback;
    path_prefix = dataDir;
    replication_factor = 1;
    ring = {
      kvstore = {
        store = "inmemory";
      };
    };
    storage = {
      filesystem = {
        chunks_directory = "${dataDir}/chunks";
        rules_directory = "${dataDir}/rules";
      };
    };
  };
  # The ingester waits min_ready_duration (15 s by default) after it is ready before /ready says
  # so: time for the other ingesters of a ring to see it during a rolling update. A single binary
  # has no such peers; without the wait it answers /ready 200 after 10.4-11.0 s instead of
  # 15.7-16.0 s (Loki 3.7.6, this configuration, 5 cold starts each).
  ingester = {
    lifecycler = {
      min_ready_duration = "0s";
    };
  };
  schema_config = {
    configs = [
      {
        from = "2024-04-01";
        store = "tsdb";
        object_store = "filesystem";
        schema = "v13";
        index = {
          prefix = "index_";
          period = "24h";
        };
      }
    ];
  };
  compactor = {
    working_directory = "${dataDir}/compactor";
    retention_enabled = true;
    delete_request_store = "filesystem";
  };
  limits_config = {
    retention_period = "${toString stack.loki.retentionHours}h";
  };
  analytics = {
    reporting_enabled = false;
  };
}
