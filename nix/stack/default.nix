# Rule: every file under nix/stack/ evaluates with builtins only; every nix/*.nix outside takes pkgs
#
# The monitoring stack API: the declaration, validated and merged with `overrides`, and its
# renderings (./render: compose file and tool configs; ./nixos: NixOS option values;
# ./image-specs.nix: what the flake's images contain). Pure, so it evaluates offline:
#
#   nix-instantiate --eval --strict --json --expr \
#     '(import ./nix/stack { overrides = { services.loki.memoryMiB = 1024; }; }).compose.project'
{
  overrides ? { },
  # Put before role, hosts.*, receiver.* and agent.* in validation messages (nix/module.nix's
  # option paths), so a message names what the user set.
  hostsFieldPrefix ? "",
}:
let
  inherit (import ./lib.nix)
    activeServiceNames
    deepMerge
    filterAttrs
    loopback
    mebibytes
    ;
  toYAML = import ./yaml.nix;

  # The declaration with every service completed from `serviceDefaults` (its own fields win):
  # overrides are checked against, and merged into, these complete records.
  declaration = import ./declaration.nix;
  declared = builtins.removeAttrs declaration [ "serviceDefaults" ] // {
    services = builtins.mapAttrs (_: deepMerge declaration.serviceDefaults) declaration.services;
  };

  validated = import ./validate.nix { inherit hostsFieldPrefix; } declared overrides;

  # The declaration plus fields every rendering needs, computed once.
  stack = validated // {
    activeServiceNames = activeServiceNames validated;
    # Not errors, but the user should know: both targets print them (NixOS `warnings`).
    warnings =
      if validated.role == "server" && validated.receiver.enable && validated.hosts.expected == null then
        [
          "warpwatch stack: ${hostsFieldPrefix}receiver.enable is set but ${hostsFieldPrefix}hosts.expected is not: no HostSilent alert will fire for an agent that goes quiet. List the agents' names, e.g. ${hostsFieldPrefix}hosts.expected = [ \"app1\" \"app2\" ]."
        ]
      else
        [ ];
    services = builtins.mapAttrs (
      name: service:
      service
      // {
        inherit name;
        memoryBytes = mebibytes service.memoryMiB;
        logTag = "${validated.project}/${name}";
        healthUrl = "http://${loopback}:${toString service.port}${service.healthPath}";
      }
    ) validated.services;
  };

  dashboardsDir = ../../configs/grafana/dashboards;

  configs = {
    prometheus = import ./render/prometheus.nix stack;
    alertmanager = import ./render/alertmanager.nix stack;
    rules = import ./render/rules.nix { inherit stack toYAML; };
    loki = import ./render/loki.nix stack;
    promtail = import ./render/promtail.nix stack;
    agentPrometheus = import ./render/agent-prometheus.nix stack;
    nginx = import ./render/nginx.nix stack;
    grafana = import ./render/grafana.nix stack;
    inherit dashboardsDir;
    # File name → JSON text of every dashboard.
    dashboardFiles = builtins.mapAttrs (name: _: builtins.readFile (dashboardsDir + "/${name}")) (
      filterAttrs (name: type: type == "regular" && builtins.match ".*\\.json" name != null) (
        builtins.readDir dashboardsDir
      )
    );
  };

  compose = import ./render/compose.nix { inherit stack configs toYAML; };

  # The NixOS mapping: option values for nix/module.nix (a function of packages and options).
  nixos = import ./nixos { inherit stack configs toYAML; };
in
{
  inherit
    stack
    compose
    configs
    toYAML
    nixos
    ;
}
