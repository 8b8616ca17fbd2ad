# Alertmanager through nixpkgs' module (services.prometheus.alertmanager): the declaration's
# receivers, routes and inhibition as its configuration, each receiver secret a systemd
# credential of the unit (LoadCredential= copies the file, which may stay root:root 0400 outside
# the store, into /run/credentials/alertmanager.service/, readable by the unit's dynamic user).
#
# A lived-in host that configures its own Alertmanager keeps it: the stack's configuration is a
# default its `configuration` (or `configText`) replaces, and Prometheus sends the stack's alerts
# to that Alertmanager, which routes them with the host's receivers. Declaring the stack's own
# receivers as well cannot work there (one Alertmanager, one configuration): evaluation fails,
# naming the option and the fix.
{
  stack,
  configs,
  mkDefault,
  defaults,
  moduleSandbox,
  hostAlertmanager,
  ...
}:
let
  inherit (import ../lib.nix) loopback;
  inherit (stack.services) alertmanager;
  rendered = configs.alertmanager;
  ours = rendered { target = "host"; };
  hostHasItsOwn = hostAlertmanager.configText != null || hostAlertmanager.configuration != ours;
in
{
  services.prometheus.alertmanager = {
    enable = true;
    configuration = mkDefault ours;
    # One instance: no gossip listener on port 9094 of every interface.
    extraFlags = [ "--cluster.listen-address=" ];
  }
  // defaults {
    listenAddress = loopback;
    inherit (alertmanager) port;
  };
  systemd.services.alertmanager.serviceConfig = moduleSandbox // {
    MemoryMax = mkDefault "${toString alertmanager.memoryMiB}M";
    LoadCredential = map (secret: "${secret.name}:${secret.file}") rendered.secrets;
  };
  assertions = [
    {
      assertion = !hostHasItsOwn || rendered.noReceiver;
      message = "services.prometheus.alertmanager.${
        if hostAlertmanager.configText != null then "configText" else "configuration"
      } is this host's own, and the stack declares receivers of its own (alerts.receivers: ${builtins.concatStringsSep ", " rendered.receiverNames}): one Alertmanager has one configuration. Either drop alerts.receivers from services.warpwatch.monitoring.overrides and route the stack's alerts (label service, severity page or ticket) in your configuration, or remove your configuration and let the stack's take its place.";
    }
  ];
  warnings =
    if rendered.noReceiver && !hostHasItsOwn then
      [
        "services.warpwatch.monitoring: no alert receiver is declared, so the stack's alerts reach Alertmanager and go nowhere (receiver ${rendered.nullReceiver}). Declare one under alerts.receivers in services.warpwatch.monitoring.overrides (README, \"Alerts\")."
      ]
    else
      [ ];
}
