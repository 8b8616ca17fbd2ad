# Grafana through nixpkgs' module: the stack's datasources and dashboards provisioned, its
# listen address, port and secrets as defaults the host's own settings win over (the secrets
# themselves: ./grafana-secrets.nix).
{
  stack,
  configs,
  mkDefault,
  defaults,
  grafana,
  dashboardsPath,
  moduleSandbox,
  ourGrafanaSecret,
  urlOf,
  ...
}:
let
  inherit (import ../lib.nix) loopback;
  service = stack.services.grafana;

  grafanaConfig = configs.grafana {
    target = "host";
    inherit dashboardsPath;
    urls = {
      prometheus = urlOf "prometheus";
      loki = urlOf "loki";
    };
  };
in
{
  services.grafana = {
    enable = true;
    # Opened when asked to; otherwise the host's own choice stands.
    openFirewall = if grafana.openFirewall then true else mkDefault false;
    settings = {
      server = defaults {
        http_addr = grafana.listenAddress;
        http_port = service.port;
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
  systemd.services.grafana.serviceConfig = moduleSandbox // {
    MemoryMax = mkDefault "${toString service.memoryMiB}M";
    ReadWritePaths = [ service.dataDir ];
  };
  warnings =
    if grafana.openFirewall && grafana.listenAddress == loopback then
      [
        "services.warpwatch.grafana.openFirewall opens port ${toString service.port}, but Grafana listens on ${loopback} only; set services.warpwatch.grafana.listenAddress (e.g. \"0.0.0.0\") to expose it."
      ]
    else
      [ ];
}
