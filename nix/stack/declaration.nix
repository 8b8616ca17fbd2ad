# The monitoring stack, declared once.
#
# Every port, memory limit, rotation size, healthcheck timing and scrape target of the stack lives
# here and nowhere else. The compose rendering, the tool configs and the NixOS mapping are pure
# functions of this data (see ./default.nix), so a number changed here changes every deployment.
#
# Pure data: no imports, no functions, builtins only. ./default.nix completes every service from
# `serviceDefaults` before validating. Users override it through
# `import ./nix/stack { overrides = { ... }; }`, never by editing a copy.
{
  project = "warpwatch";

  # "promtail" (the user's choice, end-of-life upstream, pinned to its last release) or "alloy"
  # (Grafana Alloy running the very same Promtail configuration with --config.format=promtail).
  logShipper = "promtail";

  # Host address that published ports bind to. Loopback unless exposed on purpose.
  bindAddress = "127.0.0.1";

  # json-file rotation in compose; the NixOS mapping bounds each unit's journal the same way.
  logging = {
    driver = "json-file";
    maxSizeMiB = 10;
    maxFiles = 3;
  };

  healthcheck = {
    intervalSeconds = 30;
    timeoutSeconds = 10;
    retries = 3;
    # During a start period, Docker Engine 25 and newer probe this often (compose
    # `start_interval`), so a service counts as healthy about when it is ready rather than one
    # whole interval after its start. Older engines (20.10) and docker-compose v1 lack the key:
    # nix run .#stack adds it only where the engine has it.
    startIntervalSeconds = 1;
  };

  restart = "unless-stopped";

  # How the compose log shipper reads container logs without the Docker socket: the json-file
  # logs under `hostDir` (dockerd's data-root + /containers), mounted read-only. dockerd writes
  # them root:root 0640 inside 0710 directories, so only uid 0 can list and read them: that is why
  # the shippers' `uid` below is 0 (with every capability dropped and a read-only root
  # filesystem: owner rights on those files and nothing else).
  containerLogs = {
    hostDir = "/var/lib/docker/containers";
  };

  # Host target: the shipper reads the systemd journal back this far when it (re)starts.
  journal = {
    maxAgeHours = 12;
  };

  prometheus = {
    scrapeIntervalSeconds = 15;
    evaluationIntervalSeconds = 15;
    retention = "15d";
  };

  loki = {
    retentionHours = 720;
  };

  # What every entry of `services` below has unless it says otherwise; each entry states only what
  # is its own. `dependsOn` lists the services that must be healthy before it starts: empty
  # everywhere, because Prometheus, Grafana and the shippers retry their peers, and every
  # health-gated level would add a whole healthcheck interval to the start (Docker 20.10 runs the
  # first probe one interval after the start). `healthcheckTest = [ ]` is the built-in probe of
  # `healthPath`. `startPeriodSeconds`: failed probes in this window do not count; it is the time
  # the tool may take to become ready, with margin. `published` services get a host port on
  # `bindAddress`; the others are reachable only inside the stack (compose network) or on
  # loopback (NixOS host).
  serviceDefaults = {
    dependsOn = [ ];
    healthcheckTest = [ ];
    startPeriodSeconds = 10;
    metricsPath = "/metrics";
    published = false;
  };

  # One entry per service. `uid` is the user the container runs as AND the owner of `dataDir`, its
  # state directory inside the container (a named volume seeded from the image): the image spec
  # and the compose file both read this one field, so the two can never disagree.
  services = {
    warpwatch = {
      port = 8080;
      dataDir = "/var/lib/warpwatch";
      memoryMiB = 256;
      healthPath = "/healthz";
      startPeriodSeconds = 5;
      published = true;
      uid = 10001;
      image = {
        name = "warpwatch";
        tag = "0.1.0";
      };
    };
    prometheus = {
      port = 9090;
      dataDir = "/var/lib/prometheus";
      memoryMiB = 512;
      healthPath = "/-/healthy";
      uid = 10002;
      image = {
        name = "warpwatch/prometheus";
        tag = "3.14.0";
      };
    };
    loki = {
      port = 3100;
      dataDir = "/var/lib/loki";
      memoryMiB = 512;
      healthPath = "/ready";
      # Loki's gRPC server (the querier reaches the ingester through it, on loopback): in the
      # port-clash check with every HTTP port.
      grpcPort = 9095;
      # Measured with Loki 3.7.6 and this stack's configuration (./render/loki.nix, which skips
      # the ingester's min_ready_duration): /ready 200 after 10.4 / 10.6 / 11.0 s (min / median /
      # max of 5 cold starts on 2 shared cores; 10.8 / 11.1 / 11.4 s as a unit under systemd 252),
      # peak RSS 114-123 MiB. 30 s is 2.6 times the worst case (still 1.9 times the 16 s of
      # upstream's 15 s wait); a slower start is then absorbed by `retries` more probes before
      # the service counts as unhealthy.
      startPeriodSeconds = 30;
      uid = 10003;
      image = {
        name = "warpwatch/loki";
        tag = "3.7.8";
      };
    };
    promtail = {
      port = 9080;
      dataDir = "/var/lib/promtail";
      memoryMiB = 256;
      healthPath = "/ready";
      # Reads dockerd's root-owned json-file logs: see `containerLogs`.
      uid = 0;
      image = {
        name = "warpwatch/promtail";
        tag = "3.6.11";
      };
    };
    alloy = {
      port = 12345;
      dataDir = "/var/lib/alloy";
      memoryMiB = 256;
      healthPath = "/-/ready";
      uid = 0;
      image = {
        name = "warpwatch/alloy";
        tag = "1.11.3";
      };
    };
    grafana = {
      port = 3000;
      dataDir = "/var/lib/grafana";
      memoryMiB = 512;
      healthPath = "/api/health";
      # Not measured here (no Grafana binary on the CI machine): the first start runs every
      # database migration before /api/health answers; 60 s, like Loki, so a slow disk does not
      # count failures during a normal start.
      startPeriodSeconds = 60;
      published = true;
      uid = 10005;
      image = {
        name = "warpwatch/grafana";
        tag = "12.4.0";
      };
    };
  };
}
