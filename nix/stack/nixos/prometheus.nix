# Prometheus through nixpkgs' module: the stack's scrape jobs and rules added to whatever the host
# already scrapes. What the stack needs is on; the rest are defaults a host's Prometheus keeps its
# own values for (its TSDB in stateDir above all).
{
  stack,
  configs,
  mkDefault,
  defaults,
  moduleSandbox,
  stateDirectoryOf,
  hostPort,
  endpoints,
  hostPrometheus,
  ...
}:
let
  inherit (import ../lib.nix) loopback;
  inherit (stack) services;

  promConfig = configs.prometheus {
    target = "host";
    # Wired through services.prometheus.rules (checked by promtool at build time).
    ruleFiles = [ ];
  };
  # A host's Prometheus has jobs of its own ("prometheus" above all): ours get names of their
  # own, keep the `job` label the dashboards and rules select on, carry a `stack` label so no
  # series equals one of the host's, and scrape at the declared interval whatever the host's
  # global one is.
  scrapeConfigs = map (
    job:
    job
    // {
      job_name = "${stack.project}/${job.job_name}";
      scrape_interval = promConfig.global.scrape_interval;
      static_configs = [
        {
          targets = [ (hostPort endpoints.${job.job_name}.address endpoints.${job.job_name}.port) ];
          labels = {
            job = job.job_name;
            stack = stack.project;
          };
        }
      ];
    }
  ) promConfig.scrape_configs;
in
{
  services.prometheus = {
    enable = true;
    inherit scrapeConfigs;
    rules = [ configs.rules ];
    # Issue 17: where the stack's alerts go, the host's own Alertmanager if it runs one (added to
    # the host's list). The one Alertmanager attribute of this file.
    alertmanagers = [
      {
        static_configs = [
          {
            targets = [ (hostPort endpoints.alertmanager.address endpoints.alertmanager.port) ];
          }
        ];
      }
    ];
    globalConfig = defaults {
      inherit (promConfig.global) scrape_interval evaluation_interval;
    };
  }
  // defaults {
    listenAddress = loopback;
    port = services.prometheus.port;
    stateDir = stateDirectoryOf "prometheus";
    retentionTime = stack.prometheus.retention;
  };
  systemd.services.prometheus.serviceConfig = moduleSandbox // {
    MemoryMax = mkDefault "${toString services.prometheus.memoryMiB}M";
  };
  # The host's own settings that change what the stack gets.
  warnings =
    (
      if hostPrometheus.listenAddress != loopback && hostPrometheus.listenAddress != "::1" then
        [
          "services.prometheus.listenAddress = ${builtins.toJSON hostPrometheus.listenAddress} (this host's setting, which wins over the stack's ${loopback}): the stack's metrics and Prometheus' API are reachable from other machines unless the firewall blocks port ${toString hostPrometheus.port}."
        ]
      else
        [ ]
    )
    ++ (
      if hostPrometheus.evaluationInterval != promConfig.global.evaluation_interval then
        [
          "services.prometheus.globalConfig.evaluation_interval = ${builtins.toJSON hostPrometheus.evaluationInterval} (this host's setting) also evaluates the stack's rules, declared for ${promConfig.global.evaluation_interval}: its alerts fire correspondingly later."
        ]
      else
        [ ]
    );
}
