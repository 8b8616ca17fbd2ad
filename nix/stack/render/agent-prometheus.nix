# An agent's collector: Prometheus in agent mode (`--enable-feature=agent` on 2.x, `--agent` on
# 3.x). It scrapes warpwatch and the node exporter on loopback (an agent's services share one
# network namespace in compose and listen on loopback on a host), labels every series with
# `host`, and remote-writes to the server's receiver over mutual TLS. Its WAL holds what the
# server has not acknowledged, so an outage shorter than the WAL's truncation delays delivery
# instead of losing samples.
# Valid for `promtool check config --agent` (2.42) and Prometheus 3.x.
stack:
{
  # Where the collector finds the TLS files: the declared locations by default, or a directory
  # holding client.crt, client.key and ca.crt (the compose mount, the NixOS unit's credentials).
  tlsDir ? null,
}:
let
  inherit (import ../lib.nix) loopback seconds;
  inherit (import ./agent-tls.nix stack tlsDir) certFile keyFile caFile;
  scraped = [
    "warpwatch"
    "node-exporter"
  ];
in
{
  global = {
    scrape_interval = seconds stack.prometheus.scrapeIntervalSeconds;
    external_labels.host = stack.hosts.name;
  };
  scrape_configs = map (name: {
    job_name = name;
    metrics_path = stack.services.${name}.metricsPath;
    static_configs = [ { targets = [ "${loopback}:${toString stack.services.${name}.port}" ]; } ];
    relabel_configs = [
      {
        target_label = "service";
        replacement = name;
      }
    ];
  }) scraped;
  remote_write = [
    {
      url = "https://${stack.agent.serverAddress}/api/v1/write";
      tls_config = {
        cert_file = certFile;
        key_file = keyFile;
        ca_file = caFile;
      };
    }
  ];
}
