# The node exporter through nixpkgs' module (services.prometheus.exporters.node, unit
# prometheus-node-exporter) with its default collectors. A lived-in host that runs its own keeps
# its port, address and collectors (ours are defaults): the stack scrapes that exporter where it
# listens (./host.nix `endpoints`). nixpkgs' own unit settings (ProtectClock off for the timex
# collector, the address families of the netdev collector) win over the stack's sandbox defaults.
{
  stack,
  mkDefault,
  defaults,
  daemonSandbox,
  moduleSandbox,
  ...
}:
let
  inherit (import ../lib.nix) loopback;
  exporter = stack.services.node-exporter;
in
{
  services.prometheus.exporters.node = {
    enable = true;
  }
  // defaults {
    listenAddress = loopback;
    inherit (exporter) port;
  };
  systemd.services.prometheus-node-exporter.serviceConfig = moduleSandbox // {
    MemoryMax = mkDefault "${toString exporter.memoryMiB}M";
    # The timex collector (HostClockSkew) reads the clock's state with adjtimex, which
    # ~@privileged denies; reading needs no capability, and CAP_SYS_TIME stays dropped.
    SystemCallFilter = mkDefault (daemonSandbox.SystemCallFilter ++ [ "adjtimex" ]);
  };
}
