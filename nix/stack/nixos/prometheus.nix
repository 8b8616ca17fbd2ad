# Prometheus through nixpkgs' module: the stack's scrape jobs and rules added to whatever the host
# already scrapes. What the stack needs is on; the rest are defaults a host's Prometheus keeps its
# own values for (its TSDB in stateDir above all). A Prometheus the host enables itself keeps
# nixpkgs' stateDir and listenAddress too: a default of ours would beat nixpkgs' option defaults
# (priority 1000 against 1500) and move it onto an empty TSDB and off the address its clients use.
{
  stack,
  configs,
  mkDefault,
  mkIf,
  defaults,
  moduleSandbox,
  stateDirectoryOf,
  hostPort,
  endpoints,
  hostPrometheus,
  nixpkgsShape,
  nixpkgsOptions,
  ...
}:
let
  inherit (import ../lib.nix) loopback;
  inherit (stack) services;

  promConfig = configs.prometheus {
    target = "host";
    # Wired through the module's rule files below (checked by promtool at build time).
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
    port = mkDefault services.prometheus.port;
    # A changed scrape target or rule is applied by SIGHUP (nixpkgs' ExecReload and its
    # prometheus-config-reload unit) instead of a restart: no WAL replay, no gap in every series.
    enableReload = mkDefault true;
  }
  # Agents' samples arrive through the receiver (./receiver.nix) as remote write; the flag is
  # added to the host's own flags.
  // (
    if stack.receiver.enable then { extraFlags = [ "--web.enable-remote-write-receiver" ]; } else { }
  )
  # Under the names this nixpkgs declares (26.05's, or master's `settings`): no rename warning.
  // nixpkgsOptions.prometheusValues nixpkgsShape {
    inherit scrapeConfigs;
    # A file either way: nixpkgs runs promtool over it at build time.
    ruleFiles = [ (builtins.toFile "${stack.project}-rules.yml" configs.rules) ];
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
    global = defaults {
      inherit (promConfig.global) scrape_interval evaluation_interval;
    };
    retention = mkDefault stack.prometheus.retention;
  }
  // builtins.mapAttrs (_: value: mkIf (!hostPrometheus.enabledByHost) (mkDefault value)) {
    listenAddress = loopback;
    stateDir = stateDirectoryOf "prometheus";
  };
  systemd.services.prometheus.serviceConfig = moduleSandbox // {
    MemoryMax = mkDefault "${toString services.prometheus.memoryMiB}M";
  };
  # The host's own settings that change what the stack gets.
  warnings =
    (
      if hostPrometheus.listenAddress != loopback && hostPrometheus.listenAddress != "::1" then
        [
          "services.prometheus.listenAddress = ${builtins.toJSON hostPrometheus.listenAddress} (this host's own Prometheus keeps its address, and its services.prometheus.stateDir; the stack binds ${loopback} only where it alone enables Prometheus): the stack's metrics and Prometheus' API are reachable from other machines unless the firewall blocks port ${toString hostPrometheus.port}."
        ]
      else
        [ ]
    )
    ++ (
      if hostPrometheus.evaluationInterval != promConfig.global.evaluation_interval then
        [
          "services.prometheus.${builtins.concatStringsSep "." (nixpkgsOptions.prometheusPaths nixpkgsShape).global}.evaluation_interval = ${builtins.toJSON hostPrometheus.evaluationInterval} (this host's setting) also evaluates the stack's rules, declared for ${promConfig.global.evaluation_interval}: its alerts fire correspondingly later."
        ]
      else
        [ ]
    );
}
