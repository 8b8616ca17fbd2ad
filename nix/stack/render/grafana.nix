# Grafana provisioning: the Prometheus and Loki datasources under fixed uids (the dashboards in
# configs/grafana/dashboards refer to them) and one file provider for those dashboards.
stack:
{
  target,
  # Where Grafana finds the dashboard JSON files (the compose project mounts them here).
  dashboardsPath ? "/etc/grafana/dashboards",
}:
let
  inherit (import ../lib.nix) addressOf seconds;
  urlOf =
    name: "http://${addressOf "configs.grafana" target name}:${toString stack.services.${name}.port}";
in
{
  datasources = {
    apiVersion = 1;
    datasources = [
      {
        name = "Prometheus";
        type = "prometheus";
        uid = "prometheus";
        access = "proxy";
        url = urlOf "prometheus";
        isDefault = true;
        editable = false;
        jsonData = {
          timeInterval = seconds stack.prometheus.scrapeIntervalSeconds;
        };
      }
      {
        name = "Loki";
        type = "loki";
        uid = "loki";
        access = "proxy";
        url = urlOf "loki";
        editable = false;
      }
    ];
  };
  dashboards = {
    apiVersion = 1;
    providers = [
      {
        name = "warpwatch";
        type = "file";
        folder = "warpwatch";
        disableDeletion = true;
        allowUiUpdates = false;
        options = {
          path = dashboardsPath;
        };
      }
    ];
  };
}
