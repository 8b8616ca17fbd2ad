# Grafana provisioning: the Prometheus and Loki datasources under fixed uids (the dashboards in
# configs/grafana/dashboards refer to them) and one file provider for those dashboards.
# Their names carry the project's, so they never collide with a host's own "Prometheus"; only the
# compose project, whose Grafana is the stack's alone, makes one of them the default.
stack:
{
  target,
  # Where Grafana finds the dashboard JSON files (the compose project mounts them here).
  dashboardsPath ? "/etc/grafana/dashboards",
  # Where Grafana reaches each datasource, when a host runs it elsewhere than declared.
  urls ? { },
}:
let
  inherit (import ../lib.nix) addressOf seconds;
  urlOf =
    name:
    urls.${name}
      or "http://${addressOf "configs.grafana" target name}:${toString stack.services.${name}.port}";
in
{
  datasources = {
    apiVersion = 1;
    datasources = [
      {
        name = "${stack.project} Prometheus";
        type = "prometheus";
        uid = "prometheus";
        access = "proxy";
        url = urlOf "prometheus";
        isDefault = target == "compose";
        editable = false;
        jsonData = {
          timeInterval = seconds stack.prometheus.scrapeIntervalSeconds;
        };
      }
      {
        name = "${stack.project} Loki";
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
        name = stack.project;
        type = "file";
        folder = stack.project;
        disableDeletion = true;
        allowUiUpdates = false;
        options = {
          path = dashboardsPath;
        };
      }
    ];
  };
}
