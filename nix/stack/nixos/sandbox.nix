# The sandbox tiers of the stack's units: what every unit of ours gets, what a long-running daemon
# adds, what nixpkgs' own units get as defaults, and the service's hardening.
{ defaults, ... }:
rec {
  # The sandbox every long-running unit of ours gets: no capabilities, a read-only system, no
  # kernel or clock access, native syscalls only.
  sandbox = {
    CapabilityBoundingSet = "";
    NoNewPrivileges = true;
    PrivateTmp = true;
    PrivateDevices = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    ProtectClock = true;
    ProtectControlGroups = true;
    ProtectHostname = true;
    ProtectKernelLogs = true;
    ProtectKernelModules = true;
    ProtectKernelTunables = true;
    ProtectProc = "invisible";
    LockPersonality = true;
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    SystemCallArchitectures = "native";
    UMask = "0077";
  };

  # What a long-running daemon of the stack takes on top: its own IPC and mount namespace, no
  # writable-executable memory, network and local sockets only, the service syscall set. Go
  # programs list interfaces over netlink and raise their own file limit, so unlike warpwatch
  # they keep AF_NETLINK and @resources.
  daemonSandbox = sandbox // {
    AmbientCapabilities = "";
    PrivateIPC = true;
    PrivateMounts = true;
    MemoryDenyWriteExecute = true;
    RestrictAddressFamilies = [
      "AF_UNIX"
      "AF_NETLINK"
      "AF_INET"
      "AF_INET6"
    ];
    SystemCallFilter = [
      "@system-service"
      "~@privileged"
    ];
    SystemCallErrorNumber = "EPERM";
    DevicePolicy = "closed";
  };

  # Units a nixpkgs module defines (Prometheus, Loki, Grafana): the same sandbox as defaults,
  # so whatever that module sets itself (Grafana's AF_UNIX, capability for a port below 1024,
  # ProtectSystem = "full" with its state in /var/lib) and whatever the host sets both win.
  # Private users too: each runs as its module's static user.
  moduleSandbox = defaults (
    daemonSandbox
    // {
      PrivateUsers = true;
      RemoveIPC = true;
    }
  );

  # systemd-analyze security ≤ 2.0 for the service: the sandbox plus a private user, IPC and mount
  # namespace, a syscall allow-list without @privileged/@resources, IPv4/IPv6 sockets only.
  warpwatchHardening = sandbox // {
    DynamicUser = true;
    AmbientCapabilities = "";
    PrivateUsers = true;
    PrivateIPC = true;
    PrivateMounts = true;
    ProcSubset = "pid";
    MemoryDenyWriteExecute = true;
    RestrictAddressFamilies = [
      "AF_INET"
      "AF_INET6"
    ];
    RemoveIPC = true;
    SystemCallFilter = [
      "@system-service"
      "~@privileged"
      "~@resources"
    ];
    SystemCallErrorNumber = "EPERM";
    DevicePolicy = "closed";
  };
}
