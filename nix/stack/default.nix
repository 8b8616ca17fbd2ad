# The monitoring stack API: the declaration, validated and merged with `overrides`, and its
# renderings. Everything here is pure and builtins-only, so it evaluates offline:
#
#   nix-instantiate --eval --strict --json --expr \
#     '(import ./nix/stack { overrides = { services.loki.memoryMiB = 1024; }; }).compose.project'
{
  overrides ? { },
}:
let
  inherit (import ./lib.nix) filterAttrs mebibytes;
  toYAML = import ./yaml.nix;

  validated = import ./validate.nix (import ./declaration.nix) overrides;

  activeServiceNames = [
    "warpwatch"
    "prometheus"
    "loki"
    validated.logShipper
    "grafana"
  ];

  # The declaration plus fields every rendering needs, computed once.
  stack = validated // {
    inherit activeServiceNames;
    services = builtins.mapAttrs (
      name: service:
      service
      // {
        inherit name;
        active = builtins.elem name activeServiceNames;
        memoryBytes = mebibytes service.memoryMiB;
        logTag = "${validated.project}/${name}";
        healthUrl = "http://127.0.0.1:${toString service.port}${service.healthPath}";
      }
    ) validated.services;
  };

  dashboardsDir = ../../configs/grafana/dashboards;

  configs = {
    prometheus = import ./render/prometheus.nix stack;
    rules = import ./rules.nix { inherit stack toYAML; };
    loki = import ./render/loki.nix stack;
    promtail = import ./render/promtail.nix stack;
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

  # The NixOS mapping lives in its own file; it receives whichever of these arguments it declares.
  nixos =
    let
      mapping = import ./nixos.nix;
    in
    mapping (
      builtins.intersectAttrs (builtins.functionArgs mapping) {
        inherit
          stack
          configs
          toYAML
          ;
      }
    );
in
{
  inherit
    stack
    compose
    configs
    toYAML
    ;
  activeServices = filterAttrs (_: service: service.active) stack.services;
}
// (if builtins.pathExists ./nixos.nix then { inherit nixos; } else { })
