# The compose project as a package, and `nix run .#stack` (./stack-app.sh) that runs it.
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

  # packages.compose: docker-compose.yml and every file it mounts, image tags = the images above.
  compose = linkFarm "${stack.project}-compose" (
    lib.mapAttrs (path: text: writeText (baseNameOf path) text) specs.api.compose.project
  );

  stack-app = writeShellApplication {
    name = "${stack.project}-stack";
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
      WARPWATCH_STACK_PROJECT = stack.project;
      WARPWATCH_STACK_COMPOSE = "${compose}";
      WARPWATCH_STACK_IMAGES = lib.concatMapStringsSep "\n" (
        service: "${specs.images.${service}.ref} ${images.${service}}"
      ) specs.composeServices;
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
    };
    text = builtins.readFile ./stack-app.sh;
    meta.description = "Run the ${stack.project} compose stack (up, down, ps, logs) on the local Docker daemon";
  };
in
{
  inherit compose stack-app;
}
