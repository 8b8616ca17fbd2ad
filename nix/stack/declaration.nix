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

  # Many hosts, one monitoring server (see README "Many hosts"). A "server" is this whole stack
  # and, with `receiver.enable`, the receiving side for agents; an "agent" runs warpwatch, the
  # node exporter and the collectors (Prometheus in agent mode, the log shipper) that scrape on
  # loopback and push to the server over mutual TLS. Nothing on an agent listens beyond loopback.
  role = "server";

  hosts = {
    # This stack's host name: the `host` label on every series and log line an agent pushes.
    # Required on an agent; lower-case letters, digits, `.`, `-` or `_`.
    name = null;
    # Server: the hosts it expects to hear from (a list of names). A host in it that sends no
    # sample for `silentForSeconds` raises HostSilent. null (undeclared) is a warning on a
    # server that receives.
    expected = null;
    silentForSeconds = 300;
  };

  # Server: the mutual-TLS endpoint (nginx) that admits exactly the two write paths, Prometheus
  # remote write and Loki push, from clients holding a certificate of `clientCaFile`'s CA.
  # File locations are strings naming files on the server (never Nix paths: the key would be
  # copied into the world-readable store).
  receiver = {
    enable = false;
    # The non-loopback address and port agents reach; "0.0.0.0" is every interface. The
    # receiver's own service record (`services.receiver`) holds its limits and its loopback
    # health port.
    bindAddress = "0.0.0.0";
    port = 8443;
    certFile = null;
    keyFile = null;
    clientCaFile = null;
    # Optional: the client CA's certificate revocation list (PEM), to refuse a revoked agent's
    # certificate. With it nginx refuses every client once the CRL is past its nextUpdate, so
    # re-issue it before then and restart the receiver (README "Many hosts").
    crlFile = null;
  };

  # Agent: where the server's receiver is ("monitor.example.org:8443") and this host's client
  # certificate, key and the CA that signed the server's certificate (strings, as above).
  agent = {
    serverAddress = null;
    certFile = null;
    keyFile = null;
    caFile = null;
  };

  # Where alerts go. Rendered into Alertmanager's configuration by ./render/alertmanager.nix;
  # checked by ./validate.nix (the messages there name the field and the fix).
  alerts = {
    # Receivers by name, each with exactly one of:
    #   webhook = { urlFile = "/etc/warpwatch/oncall-url"; };  a URL carrying a token, read from
    #       this file at run time (Alertmanager's url_file); or `url = "http://…";` for a URL
    #       that carries no secret;
    #   email = { smarthost = "smtp.example.org:587"; from = "…"; to = "…";
    #       requireTls = true; authUsername = "…"; authPasswordFile = "/etc/…"; }  (the last two
    #       optional, together).
    # Secret files are strings naming absolute paths on the machine that runs the stack, never
    # Nix paths (those are copied into the world-readable store): the compose file mounts them as
    # secrets, the NixOS units read them as credentials.
    receivers = { };
    # The receiver of every alert no route below takes; null picks the only receiver when there
    # is exactly one. With no receiver at all, alerts go to a receiver that drops them, named
    # so, and the stack app and NixOS say so.
    defaultReceiver = null;
    # Where `severity="page"` alerts go instead of the default receiver; null: the default.
    pagingReceiver = null;
    # More routes, tried in order before the paging one: { receiver = "…"; } with optional
    # `severity` ("page" or "ticket") and `service` (a service name of this declaration).
    routes = [ ];
    # Alertmanager's grouping timers: the first notification of a group waits `groupWait` for
    # its siblings, later changes `groupInterval`; an unresolved group is repeated every
    # `repeatInterval`.
    groupWaitSeconds = 30;
    groupIntervalSeconds = 300;
    repeatIntervalHours = 4;
    # How long a target must fail its scrapes before TargetDown fires.
    targetDownForSeconds = 120;
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
    # Measured with Debian's alertmanager 0.25 on this machine (VmRSS/VmHWM from /proc): 32 MiB
    # idle; 76 MiB peak after 30 rounds of 500 alerts (1 s apart) into 500 groups delivered to a
    # webhook; 145 MiB peak with 2000 distinct alerts in 2000 groups. 256 MiB is 1.75x that
    # worst peak.
    alertmanager = {
      port = 9093;
      dataDir = "/var/lib/alertmanager";
      memoryMiB = 256;
      healthPath = "/-/healthy";
      uid = 10006;
      image = {
        name = "warpwatch/alertmanager";
        tag = "0.28.1";
      };
    };
    # Measured with Debian's prometheus-node-exporter 1.5 (default collectors) on this 2-CPU
    # machine: 16.5 MiB idle, 21.9 MiB peak under 4 concurrent scrape loops of 100 scrapes each.
    # 64 MiB is 2.9x that: the series count grows with CPUs, disks, mounts and interfaces, so a
    # larger host has more to render per scrape. No state: `dataDir` is only its working
    # directory. What it reads of the host in compose: see ./render/compose.nix.
    node-exporter = {
      port = 9100;
      dataDir = "/var/lib/node-exporter";
      memoryMiB = 64;
      healthPath = "/";
      uid = 10007;
      image = {
        name = "warpwatch/node-exporter";
        tag = "1.9.1";
      };
    };
    # An agent's collector: Prometheus in agent mode (./render/agent-prometheus.nix), the same
    # program and image as `prometheus`, so the same uid and state directory (its WAL). Measured
    # with Debian's Prometheus 2.42 in agent mode scraping warpwatch and the node exporter every
    # 15 s: 48-54 MiB RSS, including while it holds a 10-minute backlog for an absent server
    # (README "Many hosts"). 128 MiB is 2.4x that.
    collector = {
      port = 9099;
      dataDir = "/var/lib/prometheus";
      memoryMiB = 128;
      healthPath = "/-/ready";
      uid = 10002;
      image = {
        name = "warpwatch/prometheus";
        tag = "3.14.0";
      };
    };
    # A server's receiver (nginx, ./render/nginx.nix): the mutual-TLS listener of
    # `receiver.bindAddress:receiver.port` plus, on `port`, a plain-HTTP listener (loopback on a
    # host, the stack network in compose) that answers only the health probe and a liveness
    # gauge Prometheus scrapes. Measured with Debian's nginx 1.22 under 50 agents: 16.7 MiB peak
    # (README "Many hosts"); 64 MiB is 3.8x that.
    receiver = {
      port = 8444;
      dataDir = "/var/lib/warpwatch-receiver";
      memoryMiB = 64;
      healthPath = "/healthz";
      uid = 10008;
      image = {
        name = "warpwatch/nginx";
        tag = "1.28.0";
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
