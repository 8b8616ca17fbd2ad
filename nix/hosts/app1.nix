# nixosConfigurations.app1: an agent of the two-host pair (README "Many hosts"). warpwatch, the
# node exporter and the collectors run here on loopback; metrics and logs go to monitor's receiver
# over mutual TLS. Before switching, put in place (never in the Nix store): this host's client
# certificate and key, and the CA that signed the server's certificate.
{
  system.stateVersion = "26.05";
  networking.hostName = "app1";

  services.warpwatch = {
    enable = true;
    monitoring = {
      enable = true;
      role = "agent";
      agent = {
        serverAddress = "monitor.example.org:8443";
        certFile = "/etc/warpwatch/tls/client.crt";
        keyFile = "/run/keys/warpwatch/client.key";
        caFile = "/etc/warpwatch/tls/ca.crt";
      };
    };
  };
}
