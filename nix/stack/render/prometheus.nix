# prometheus.yml as an attribute set: one scrape job per running service (the active log
# shipper's job is named after it), addressed by compose service name or over loopback, and the
# Alertmanager it sends alerts to.
# Valid for Prometheus 2.42 (promtool here) and 3.x (nixos-26.05): only keys both versions know.
stack:
{
  target,
  # Paths of rule files; relative paths resolve against the directory of prometheus.yml.
  # The default is where the compose project mounts `configs.rules`, or `rules.yml` next to the
  # config on a host. Pass [ ] when rules are wired some other way (the NixOS module's rule files).
  ruleFiles ? null,
}:
let
  inherit (import ../lib.nix) addressOf seconds;
  address = addressOf "configs.prometheus" target;
  targetOf = name: "${address name}:${toString stack.services.${name}.port}";
in
{
  global = {
    scrape_interval = seconds stack.prometheus.scrapeIntervalSeconds;
    evaluation_interval = seconds stack.prometheus.evaluationIntervalSeconds;
  };
  rule_files =
    if ruleFiles != null then
      ruleFiles
    else if target == "compose" then
      [ "/etc/prometheus/rules.yml" ]
    else
      [ "rules.yml" ];
  scrape_configs = map (
    name:
    let
      service = stack.services.${name};
    in
    {
      job_name = name;
      metrics_path = service.metricsPath;
      static_configs = [
        {
          targets = [ (targetOf name) ];
        }
      ];
      # Every series carries `service`, the name the alert routes group and inhibit by, on
      # every target: a relabelling, so it survives a mapping that renames the job or replaces
      # the static configs (the NixOS one does both).
      relabel_configs = [
        {
          target_label = "service";
          replacement = name;
        }
      ]
      # A server with a host name labels its own series like its agents' (issue 18), so the
      # dashboards' host selector lists it too.
      ++ (
        if stack.hosts.name != null then
          [
            {
              target_label = "host";
              replacement = stack.hosts.name;
            }
          ]
        else
          [ ]
      );
    }
  ) stack.activeServiceNames;
  alerting.alertmanagers = [
    {
      static_configs = [
        {
          targets = [ (targetOf "alertmanager") ];
        }
      ];
    }
  ];
}
