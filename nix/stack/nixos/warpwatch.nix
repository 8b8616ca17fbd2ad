# The service's own unit: hardened, its state in /var/lib, on the address and port the module's
# options give, with the firewall opened only when asked to.
{
  stack,
  warpwatch,
  listenAddress,
  openFirewall,
  extraEnvironment,
  warpwatchHardening,
  stateDirectoryOf,
  hostPort,
  ...
}:
let
  inherit (import ../lib.nix) loopback;
  service = stack.services.warpwatch;

  # Enough for thousands of idle keep-alive connections; systemd's default soft limit of 1024
  # is what a few hundred exhaust.
  openFiles = 65536;

  isLoopbackOrWildcard = builtins.elem listenAddress [
    loopback
    "::1"
    "0.0.0.0"
    "::"
  ];
in
{
  systemd.services.warpwatch = {
    description = "warpwatch web service";
    wantedBy = [ "multi-user.target" ];
    after = [ "network.target" ];
    environment = {
      WARPWATCH_ADDR = hostPort listenAddress service.port;
      WARPWATCH_DATA_DIR = service.dataDir;
      RUST_LOG = "info";
    }
    // extraEnvironment;
    serviceConfig = warpwatchHardening // {
      ExecStart = "${warpwatch}/bin/warpwatch";
      MemoryMax = "${toString service.memoryMiB}M";
      LimitNOFILE = openFiles;
      # The visits file lives here and survives rebuilds and reboots.
      StateDirectory = stateDirectoryOf "warpwatch";
      StateDirectoryMode = "0700";
      WorkingDirectory = service.dataDir;
      Restart = "always";
      RestartSec = "2s";
    };
  };
  networking.firewall.allowedTCPPorts = if openFirewall then [ service.port ] else [ ];
  warnings =
    (
      if
        openFirewall
        && builtins.elem listenAddress [
          loopback
          "::1"
        ]
      then
        [
          "services.warpwatch.openFirewall opens port ${toString service.port}, but warpwatch listens on ${listenAddress} only; set services.warpwatch.listenAddress (e.g. \"0.0.0.0\" or \"::\") to expose it."
        ]
      else
        [ ]
    )
    ++ (
      if isLoopbackOrWildcard then
        [ ]
      else
        [
          "services.warpwatch.listenAddress = ${builtins.toJSON listenAddress}: warpwatch answers on that address only, so the healthcheck and Prometheus reach it there (not on ${loopback}); use \"0.0.0.0\" or \"::\" (plus the firewall) to expose it on every interface."
        ]
    );
  assertions = [ ];
}
