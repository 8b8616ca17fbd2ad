# What the flake builds from the stack declaration, as plain data: the OCI image of every service,
# the compose project that references those images, and what `nix run .#stack` prints.
#
# Builtins only, like everything in this directory: the flake passes real package versions and
# store paths, the tests pass plain strings and assert the result offline. nix/images.nix only
# hands these attribute sets to dockerTools, so nothing here is duplicated there.
{
  # { <service> = { version = "…"; path = "/nix/store/…"; }; } for warpwatch, prometheus, loki,
  # promtail, alloy, grafana, alertmanager, node-exporter and receiver (nginx).
  packages,
  # The user's stack overrides (same shape as ./declaration.nix).
  overrides ? { },
  # "agent": the project `nix run .#agent` writes, rendered with `agentPlaceholders` where the
  # host's name, the server's address and the TLS directory go; the app puts the values it was
  # given, checked against the declaration's own rules, in their place.
  role ? "server",
}:
let
  inherit (builtins)
    attrNames
    concatStringsSep
    filter
    genList
    hasAttr
    match
    stringLength
    substring
    ;

  inherit (import ./lib.nix)
    deepMerge
    genAttrs
    listenAddress
    loopback
    ;

  # A Docker tag is [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}; nixpkgs versions may carry a "+" or similar.
  toTag =
    version:
    let
      chars = genList (i: substring i 1 version) (stringLength version);
      allowed = c: match "[A-Za-z0-9_.-]" c != null;
      safe = concatStringsSep "" (map (c: if allowed c then c else "-") chars);
      anchored = if match "[A-Za-z0-9_].*" safe == null then "v${safe}" else safe;
    in
    substring 0 128 anchored;

  # Services that run another service's image: the collector is Prometheus (agent mode), with
  # the same uid and state directory, so it is the very same image.
  sharedImages = {
    collector = "prometheus";
  };
  imageOf = name: sharedImages.${name} or name;

  imageServices = filter (name: !(hasAttr name sharedImages)) (attrNames packages);

  # The images are tagged with the version of the package inside; the compose project is rendered
  # with exactly these tags, so `docker compose` never pulls anything.
  tagOverrides = {
    services = genAttrs (imageServices ++ attrNames sharedImages) (name: {
      image.tag = toTag packages.${imageOf name}.version;
    });
  };

  # Valid by the declaration's rules, and unlike anything a user would give.
  agentPlaceholders = {
    host = "host-name-given-to-agent-up";
    serverAddress = "server-address-given-to-agent-up:${toString declared.receiver.port}";
    tlsDir = "/tls-dir-given-to-agent-up";
  };
  declared = (import ./. { }).stack;
  roleOverrides =
    if role == "agent" then
      {
        role = "agent";
        hosts.name = agentPlaceholders.host;
        agent = {
          inherit (agentPlaceholders) serverAddress;
          certFile = "${agentPlaceholders.tlsDir}/client.crt";
          keyFile = "${agentPlaceholders.tlsDir}/client.key";
          caFile = "${agentPlaceholders.tlsDir}/ca.crt";
        };
      }
    else
      { };

  api = import ./. { overrides = deepMerge (deepMerge overrides roleOverrides) tagOverrides; };
  inherit (api) stack;

  nanoseconds = seconds: seconds * 1000000000;

  # Per-service entry point. Compose supplies the arguments (config file paths), except for
  # Grafana, whose Nix package needs its home path (conf/ and public/) spelled out.
  entrypoints = {
    warpwatch = [ "/bin/warpwatch" ];
    prometheus = [ "/bin/prometheus" ];
    loki = [ "/bin/loki" ];
    promtail = [ "/bin/promtail" ];
    alloy = [ "/bin/alloy" ];
    alertmanager = [ "/bin/alertmanager" ];
    node-exporter = [ "/bin/node_exporter" ];
    receiver = [ "/bin/nginx" ];
    grafana = [
      "/bin/grafana"
      "server"
      "--homepath"
      "${packages.grafana.path}/share/grafana"
    ];
  };

  environments = {
    warpwatch = [
      "WARPWATCH_ADDR=${listenAddress "image-specs" "compose"}:${toString stack.services.warpwatch.port}"
      "WARPWATCH_DATA_DIR=${stack.services.warpwatch.dataDir}"
    ];
    grafana = [
      "GF_PATHS_DATA=${stack.services.grafana.dataDir}"
      "GF_PATHS_PLUGINS=${stack.services.grafana.dataDir}/plugins"
      # Logs go to stdout, where the log shipper picks them up.
      "GF_LOG_MODE=console"
    ];
  };

  mkSpec =
    service:
    let
      svc = stack.services.${service};
      inherit (svc.image) name tag;
      uid = toString svc.uid;
      namingUid = line: if svc.uid == 0 then [ ] else [ line ];
      # Directories the service writes: its state (a named volume in compose, which Docker seeds
      # with the image directory's owner, so it must belong to the uid compose runs it as: both
      # are the service record's `uid`) and /tmp.
      directories = [
        {
          path = svc.dataDir;
          owner = uid;
          mode = "0750";
        }
        {
          path = "/tmp";
          owner = "0";
          mode = "1777";
        }
      ];
    in
    {
      inherit name tag directories;
      ref = "${name}:${tag}";
      # Fixed timestamps: the same inputs give the same image digest.
      created = "1970-01-01T00:00:01Z";
      mtime = "1970-01-01T00:00:01Z";
      # The warpwatch binary is in every image: it is the healthcheck, no shell or curl needed.
      contents =
        if service == "warpwatch" then
          [ "warpwatch" ]
        else
          [
            service
            "warpwatch"
          ];
      # /etc/passwd and /etc/group lines naming the service's uid (fakeNss already names root).
      passwd = namingUid "${service}:x:${uid}:${uid}:${service}:${svc.dataDir}:/sbin/nologin";
      group = namingUid "${service}:x:${uid}:";
      # Runs under fakeroot in the customisation layer (cwd = image root).
      fakeRootCommands = concatStringsSep "\n" (
        map (dir: ''
          mkdir -p .${dir.path}
          chown ${dir.owner}:${dir.owner} .${dir.path}
          chmod ${dir.mode} .${dir.path}
        '') directories
      );
      config = {
        User = "${uid}:${uid}";
        Entrypoint = entrypoints.${service};
        Env = environments.${service} or [ ];
        WorkingDir = svc.dataDir;
        ExposedPorts = {
          "${toString svc.port}/tcp" = { };
        };
        Healthcheck = {
          # Same probe as the compose file's healthcheck (which takes precedence there), so the
          # image is healthy-checked the same way under plain `docker run`.
          Test = [
            "CMD"
            "/bin/warpwatch"
            "probe"
            svc.healthUrl
          ];
          Interval = nanoseconds stack.healthcheck.intervalSeconds;
          Timeout = nanoseconds stack.healthcheck.timeoutSeconds;
          StartPeriod = nanoseconds svc.startPeriodSeconds;
          Retries = stack.healthcheck.retries;
        };
        Labels = {
          "org.opencontainers.image.title" = name;
          "org.opencontainers.image.version" = tag;
          "org.opencontainers.image.description" =
            "${service} of the ${stack.project} stack, built by Nix from nixpkgs";
          "dev.warpwatch.service" = service;
        };
      };
    };

  images = genAttrs imageServices mkSpec;

  # The services the rendered compose file runs (the log shipper chosen by the declaration), and
  # the images they run, each once.
  composeServices = filter (name: hasAttr (imageOf name) images) (
    attrNames api.compose.file.services
  );
  composeImages = builtins.foldl' (
    found: name: if builtins.elem (imageOf name) found then found else found ++ [ (imageOf name) ]
  ) [ ] composeServices;

  # How long `nix run .#stack -- up` waits for every service to turn healthy: the slowest may fail
  # every probe of its start period and still pass `retries` more, one interval apart.
  upTimeoutSeconds =
    let
      inherit (stack.healthcheck) intervalSeconds retries;
      longestStart = builtins.foldl' (
        longest: name:
        let
          period = stack.services.${name}.startPeriodSeconds;
        in
        if period > longest then period else longest
      ) 0 composeServices;
    in
    longestStart + intervalSeconds * (retries + 1);

  host = if stack.bindAddress == "0.0.0.0" then loopback else stack.bindAddress;
  published = filter (name: stack.services.${name}.published) composeServices;
in
{
  inherit
    api
    stack
    images
    composeServices
    composeImages
    imageOf
    toTag
    upTimeoutSeconds
    agentPlaceholders
    ;
  # The declaration's rules the agent app checks its flags with (nix/stack/lib.nix).
  patterns = {
    hostName = (import ./lib.nix).hostNamePattern;
    serverAddress = (import ./lib.nix).serverAddressPattern;
  };
  # Printed once by `nix run .#stack -- up` when alerts would reach no one; empty otherwise (and
  # on an agent, which has no Alertmanager).
  alertsNotice =
    if role == "server" && api.configs.alertmanager.noReceiver then
      "No alert receiver is declared: alerts fire in Prometheus and reach Alertmanager, which sends them nowhere (its receiver is named ${api.configs.alertmanager.nullReceiver}). Declare one under alerts.receivers (README, \"Alerts\")."
    else
      "";

  # One line per published service, printed by `nix run .#stack -- up`.
  urls = concatStringsSep "\n" (
    map (name: "${name}: http://${host}:${toString stack.services.${name}.port}/") published
  );
}
