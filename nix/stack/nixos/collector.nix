# An agent's collector: nixpkgs' Prometheus in agent mode (services.prometheus.enableAgentMode)
# on loopback, scraping warpwatch and the node exporter and remote-writing to the server's
# receiver over mutual TLS (./render/agent-prometheus.nix). The TLS files reach it as systemd
# credentials, so the key may stay root:root 0400 where the host keeps it and never enters the
# Nix store. One Prometheus per host: a host whose own Prometheus is a server cannot also be this
# agent, so that fails evaluation instead of turning the host's server into an agent.
{
  stack,
  configs,
  mkDefault,
  unitNames,
  moduleSandbox,
  stateDirectoryOf,
  hostPrometheus,
  nixpkgsShape,
  nixpkgsOptions,
  ...
}:
let
  inherit (import ../lib.nix) loopback;
  collector = stack.services.collector;
  credentialsDir = "/run/credentials/${unitNames.collector}.service";
  config = configs.agentPrometheus { tlsDir = credentialsDir; };
  credentials = import ./agent-credentials.nix stack credentialsDir;
in
{
  services.prometheus = {
    enable = true;
    enableAgentMode = true;
    listenAddress = loopback;
    inherit (collector) port;
    stateDir = stateDirectoryOf "collector";
    # A changed scrape target is applied by SIGHUP, as on the server.
    enableReload = mkDefault true;
  }
  // nixpkgsOptions.prometheusValues nixpkgsShape {
    inherit (config) global;
    scrapeConfigs = config.scrape_configs;
    remoteWrite = config.remote_write;
  };
  systemd.services.${unitNames.collector}.serviceConfig = moduleSandbox // {
    MemoryMax = mkDefault "${toString collector.memoryMiB}M";
    LoadCredential = credentials;
  };
  assertions = [
    {
      assertion = !hostPrometheus.enabledByHost;
      message = "services.prometheus.enable is set on this host (a Prometheus server of its own), but services.warpwatch.monitoring.role = \"agent\" runs the agent's collector as services.prometheus in agent mode: one Prometheus cannot be both. Let the server scrape or receive this host's own targets and drop services.prometheus.enable here, or make this host a server (services.warpwatch.monitoring.role = \"server\").";
    }
  ];
}
