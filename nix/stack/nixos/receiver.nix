# A server's receiver: nginx (./render/nginx.nix) in a unit of the stack's own, so it coexists
# with whatever the host runs as services.nginx. It terminates the agents' mutual TLS on
# receiver.bindAddress:receiver.port and passes the two write paths to Prometheus (which then
# accepts remote write) and Loki on loopback. Certificate, key, client CA and CRL reach it as systemd
# credentials: the key may stay root:root 0400 where the host keeps it, outside the Nix store.
{
  stack,
  configs,
  nginx,
  receiverOpenFirewall,
  unitNames,
  daemonSandbox,
  stateDirectoryOf,
  ...
}:
let
  inherit (stack) receiver;
  service = stack.services.receiver;
  unitName = unitNames.receiver;
  credentialsDir = "/run/credentials/${unitName}.service";
  configPath = "${unitName}/nginx.conf";
  configText = configs.nginx {
    target = "host";
    tlsDir = credentialsDir;
    stateDir = service.dataDir;
  };
  # Binding below 1024 is the one privilege nginx may need, and only for such a port.
  privilegedPort = receiver.port < 1024;
  nginxPackage =
    if nginx == null then
      throw "warpwatch stack: receiver.enable needs the mapping's `nginx` argument (nix/module.nix passes pkgs.nginx)"
    else
      nginx;
in
{
  environment.etc.${configPath}.text = configText;
  systemd.services.${unitName} = {
    description = "warpwatch receiver: agents' metrics and logs over mutual TLS (nginx)";
    wantedBy = [ "multi-user.target" ];
    after = [
      "network.target"
      "prometheus.service"
      "loki.service"
    ];
    restartTriggers = [ configText ];
    serviceConfig = daemonSandbox // {
      # -e: errors to stderr (the journal) before the configuration is read, instead of nginx's
      # compiled-in log file, which the read-only system forbids.
      ExecStart = "${nginxPackage}/bin/nginx -e stderr -p ${service.dataDir} -c /etc/${configPath}";
      MemoryMax = "${toString service.memoryMiB}M";
      DynamicUser = true;
      PrivateUsers = !privilegedPort;
      StateDirectory = stateDirectoryOf "receiver";
      StateDirectoryMode = "0700";
      # Copied at start: a renewed CRL takes a restart (there is no reload).
      LoadCredential = map (file: "${file.name}:${file.file}") (import ../render/receiver-tls.nix stack);
      CapabilityBoundingSet = if privilegedPort then [ "CAP_NET_BIND_SERVICE" ] else "";
      AmbientCapabilities = if privilegedPort then [ "CAP_NET_BIND_SERVICE" ] else "";
      Restart = "always";
      RestartSec = "2s";
      TimeoutStopSec = "10s";
    };
  };
  networking.firewall.allowedTCPPorts = if receiverOpenFirewall then [ receiver.port ] else [ ];
}
