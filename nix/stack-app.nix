# The compose project as a package, and `nix run .#stack` (./stack-app.sh) that runs it; with the
# agent's specs (image-specs.nix, role = "agent"), `nix run .#agent`, the same script.
{
  lib,
  acl,
  coreutils,
  docker-client,
  docker-compose,
  gnugrep,
  linkFarm,
  util-linux,
  writeShellApplication,
  writeText,
  # ./stack/image-specs.nix evaluated for this system.
  specs,
  # The streamed images of ./images.nix, keyed like specs.images.
  images,
}:
let
  inherit (specs) stack;
  isAgent = stack.role == "agent";
  receiverFiles =
    if builtins.elem "receiver" stack.activeServiceNames then
      map (file: "receiver.${file.field} ${file.file}") (import ./stack/render/receiver-tls.nix stack)
    else
      [ ];

  # packages.compose: docker-compose.yml and every file it mounts, image tags = the images above.
  compose = linkFarm "${stack.project}-${if isAgent then "agent-" else ""}compose" (
    lib.mapAttrs (path: text: writeText (baseNameOf path) text) specs.api.compose.project
  );

  stack-app = writeShellApplication {
    name = "${stack.project}-${if isAgent then "agent" else "stack"}";
    # The docker CLI and a pinned docker-compose come with the app: the user needs only a daemon.
    runtimeInputs = [
      acl
      coreutils
      docker-client
      gnugrep
      # setpriv: as root, `up` asks the kernel whether Alertmanager's uid may read its secrets.
      util-linux
    ];
    runtimeEnv = {
      # An agent's project has a name of its own: a host may run both.
      WARPWATCH_STACK_PROJECT = if isAgent then "${stack.project}-agent" else stack.project;
      WARPWATCH_STACK_COMPOSE = "${compose}";
      WARPWATCH_STACK_IMAGES = lib.concatMapStringsSep "\n" (
        image: "${specs.images.${image}.ref} ${images.${image}}"
      ) specs.composeImages;
      WARPWATCH_STACK_URLS = specs.urls;
      WARPWATCH_STACK_ALERTS_NOTICE = specs.alertsNotice;
      WARPWATCH_STACK_DOCKER_COMPOSE = lib.getExe docker-compose;
      WARPWATCH_STACK_UP_TIMEOUT = toString specs.upTimeoutSeconds;
      WARPWATCH_STACK_START_INTERVAL_FILE = specs.api.compose.startIntervalFile;
      # Grafana's container uid: the only user besides the owner that may read the secret files.
      WARPWATCH_STACK_SECRET_READER_UID = toString stack.services.grafana.uid;
      # The receivers' secret files `up` checks Alertmanager's uid can read before it starts.
      WARPWATCH_STACK_ALERTMANAGER_UID = toString stack.services.alertmanager.uid;
      WARPWATCH_STACK_ALERTMANAGER_SECRETS = lib.concatMapStringsSep "\n" (
        secret: "${secret.receiver}.${secret.field} ${secret.file}"
      ) specs.api.configs.alertmanager.secrets;
      # The receiver's TLS files `up` checks its uid can read (server with receiver.enable).
      WARPWATCH_STACK_RECEIVER_UID = toString stack.services.receiver.uid;
      WARPWATCH_STACK_RECEIVER_FILES = builtins.concatStringsSep "\n" receiverFiles;
    }
    // lib.optionalAttrs isAgent {
      WARPWATCH_STACK_ROLE = "agent";
      WARPWATCH_AGENT_HOST_PLACEHOLDER = specs.agentPlaceholders.host;
      WARPWATCH_AGENT_SERVER_PLACEHOLDER = specs.agentPlaceholders.serverAddress;
      WARPWATCH_AGENT_TLS_DIR_PLACEHOLDER = specs.agentPlaceholders.tlsDir;
      WARPWATCH_AGENT_HOST_PATTERN = specs.patterns.hostName;
      WARPWATCH_AGENT_SERVER_PATTERN = specs.patterns.serverAddress;
      # The collectors that read the TLS files, by their containers' uids.
      WARPWATCH_AGENT_TLS_READERS =
        lib.concatMapStringsSep "\n" (name: "${name} ${toString stack.services.${name}.uid}")
          [
            "collector"
            stack.logShipper
          ];
    };
    text = builtins.readFile ./stack-app.sh;
    meta.description =
      if isAgent then
        "Run the ${stack.project} agent (up --server HOST:PORT --tls-dir DIR, down, ps, logs) on the local Docker daemon"
      else
        "Run the ${stack.project} compose stack (up, down, ps, logs) on the local Docker daemon";
  };
in
{
  inherit compose stack-app;
}
