# Loki through nixpkgs' module, with the stack's configuration and sandbox.
{
  stack,
  configs,
  mkDefault,
  moduleSandbox,
  ...
}:
let
  inherit (stack.services) loki;
in
{
  services.loki = {
    enable = true;
    dataDir = mkDefault loki.dataDir;
    configuration = configs.loki { target = "host"; };
  };
  systemd.services.loki.serviceConfig = moduleSandbox // {
    MemoryMax = mkDefault "${toString loki.memoryMiB}M";
    # nixpkgs' unit writes dataDir with ProtectSystem = "full"; should the host make it
    # strict, the data directory stays writable.
    ReadWritePaths = [ loki.dataDir ];
  };
}
