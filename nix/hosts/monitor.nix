# nixosConfigurations.monitor: the monitoring server of a two-host pair (README "Many hosts"). It
# runs the whole stack and the receiver, which admits app1's metrics and logs over mutual TLS.
# Before switching, put in place (never in the Nix store): the server's certificate and key and the
# CA that signed the agents' client certificates, and the two Grafana secrets.
{
  system.stateVersion = "26.05";
  networking.hostName = "monitor";

  services.warpwatch = {
    enable = true;
    monitoring = {
      enable = true;
      # HostSilent pages when one of these sends nothing (hosts.silentForSeconds).
      hosts.expected = [ "app1" ];
      receiver = {
        enable = true;
        # Agents reach the receiver's port; nothing else of the stack is exposed.
        openFirewall = true;
        certFile = "/etc/warpwatch/tls/server.crt";
        keyFile = "/run/keys/warpwatch/server.key";
        clientCaFile = "/etc/warpwatch/tls/ca.crt";
      };
    };
    grafana = {
      adminPasswordFile = "/run/secrets/grafana-admin-password";
      secretKeyFile = "/run/secrets/grafana-secret-key";
    };
  };
}
