# The monitoring stack, declared once.
#
# Every port, memory limit, rotation size, healthcheck timing and scrape target of the stack lives
# here and nowhere else. The compose rendering, the tool configs and the NixOS mapping are pure
# functions of this data (see ./default.nix), so a number changed here changes every deployment.
#
# Pure data: no imports, no functions, builtins only. Users override it through
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
  };

  restart = "unless-stopped";

  # How the compose log shipper reads container logs without the Docker socket: the json-file
  # logs under `hostDir`, mounted read-only. dockerd writes them root:root 0640 inside 0710
  # directories, so only uid 0 can list and read them; the shipper container runs as that uid
  # with every capability dropped and a read-only root filesystem (owner rights on those files
  # and nothing else).
  containerLogs = {
    hostDir = "/var/lib/docker/containers";
    readerUid = 0;
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

  # One entry per service. `published` services get a host port on `bindAddress`; the others are
  # reachable only inside the stack (compose network) or on loopback (NixOS host).
  # `uid` is the non-root user the container runs as; `dataDir` is its state directory inside the
  # container (a named volume); `dependsOn` lists the services that must be healthy before it
  # starts.
  services = {
    warpwatch = {
      port = 8080;
      dataDir = "/var/lib/warpwatch";
      dependsOn = [ ];
      memoryMiB = 256;
      healthPath = "/healthz";
      healthcheckTest = [ ];
      startPeriodSeconds = 5;
      metricsPath = "/metrics";
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
      dependsOn = [ "warpwatch" ];
      memoryMiB = 512;
      healthPath = "/-/healthy";
      healthcheckTest = [ ];
      startPeriodSeconds = 10;
      metricsPath = "/metrics";
      published = false;
      uid = 10002;
      image = {
        name = "warpwatch/prometheus";
        tag = "3.14.0";
      };
    };
    loki = {
      port = 3100;
      dataDir = "/var/lib/loki";
      dependsOn = [ ];
      memoryMiB = 512;
      healthPath = "/ready";
      healthcheckTest = [ ];
      # Loki's ring needs a few seconds before /ready turns 200.
      startPeriodSeconds = 30;
      metricsPath = "/metrics";
      published = false;
      uid = 10003;
      image = {
        name = "warpwatch/loki";
        tag = "3.7.8";
      };
    };
    promtail = {
      port = 9080;
      dataDir = "/var/lib/promtail";
      dependsOn = [ "loki" ];
      memoryMiB = 256;
      healthPath = "/ready";
      healthcheckTest = [ ];
      startPeriodSeconds = 10;
      metricsPath = "/metrics";
      published = false;
      uid = 10004;
      image = {
        name = "warpwatch/promtail";
        tag = "3.6.11";
      };
    };
    alloy = {
      port = 12345;
      dataDir = "/var/lib/alloy";
      dependsOn = [ "loki" ];
      memoryMiB = 256;
      healthPath = "/-/ready";
      healthcheckTest = [ ];
      startPeriodSeconds = 10;
      metricsPath = "/metrics";
      published = false;
      uid = 10004;
      image = {
        name = "warpwatch/alloy";
        tag = "1.11.3";
      };
    };
    grafana = {
      port = 3000;
      dataDir = "/var/lib/grafana";
      dependsOn = [
        "prometheus"
        "loki"
      ];
      memoryMiB = 512;
      healthPath = "/api/health";
      healthcheckTest = [ ];
      startPeriodSeconds = 30;
      metricsPath = "/metrics";
      published = true;
      uid = 10005;
      image = {
        name = "warpwatch/grafana";
        tag = "12.4.0";
      };
    };
  };
}
