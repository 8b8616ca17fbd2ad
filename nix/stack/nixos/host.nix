# The host as it really runs: the host's own settings (read back by nix/module.nix as `host`)
# where they win over the stack's defaults, and where each service answers on it.
{
  stack,
  configs,
  listenAddress,
  grafana,
  host,
  ...
}:
let
  inherit (import ../lib.nix)
    genAttrs
    loopback
    seconds
    ;
  inherit (stack) services;

  isIPv6 = address: builtins.match ".*:.*" address != null;

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
in
rec {
  # host:port as sockets and URLs want it: an IPv6 address in brackets.
  hostPort = address: port: "${if isIPv6 address then "[${address}]" else address}:${toString port}";

  # systemd copies the secret files into the unit's credentials directory, readable by Grafana's
  # user only; the files themselves may stay root:root 0400 and never enter the Nix store.
  grafanaCredential = name: "/run/credentials/grafana.service/${name}";
  ourGrafanaSecret = {
    secretKey = "$__file{${grafanaCredential "secret-key"}}";
    adminPassword = "$__file{${grafanaCredential "admin-password"}}";
  };

  hostPrometheus = {
    enabledByHost = false;
    listenAddress = loopback;
    port = services.prometheus.port;
    evaluationInterval = seconds stack.prometheus.evaluationIntervalSeconds;
  }
  // host.prometheus or { };
  # A host's own Alertmanager configuration (or text) replaces the stack's: ./alertmanager.nix.
  hostAlertmanager = {
    listenAddress = loopback;
    port = services.alertmanager.port;
    configuration = configs.alertmanager { target = "host"; };
    configText = null;
  }
  // host.alertmanager or { };
  hostNodeExporter = {
    listenAddress = loopback;
    port = services.node-exporter.port;
  }
  // host.nodeExporter or { };
  hostGrafana = {
    address = grafana.listenAddress;
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
      # The host's own Alertmanager and node exporter where it runs them (nixpkgs' default
      # address "" is every interface).
      alertmanager = {
        address = reachAt hostAlertmanager.listenAddress;
        inherit (hostAlertmanager) port;
      };
      node-exporter = {
        address = reachAt hostNodeExporter.listenAddress;
        inherit (hostNodeExporter) port;
      };
    };
  urlOf = name: "http://${hostPort endpoints.${name}.address endpoints.${name}.port}";
}
