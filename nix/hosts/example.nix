# nixosConfigurations.example: a small host running warpwatch and its monitoring stack.
#   nixos-rebuild build-vm --flake .#example && ./result/bin/run-warpwatch-example-vm
# On a real server, replace the disk/boot lines with the host's hardware configuration and put
# the two Grafana secrets in place before switching (see the README's NixOS section).
{
  config,
  lib,
  pkgs,
  ...
}:
let
  secrets = "/run/secrets";
  grafanaPort = config.services.grafana.settings.server.http_port;
in
{
  system.stateVersion = "26.05";
  networking.hostName = "warpwatch-example";

  # Placeholder disk and boot loader so the configuration builds; build-vm replaces both.
  fileSystems."/" = {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
  };
  boot.loader.grub.device = "/dev/vda";

  services.warpwatch = {
    enable = true;
    # Public on purpose: the service answers on every interface and its port is opened.
    listenAddress = "0.0.0.0";
    openFirewall = true;
    monitoring.enable = true;
    # Grafana stays on loopback (reach it through an SSH tunnel or the VM's forwarded port).
    grafana = {
      adminPasswordFile = "${secrets}/grafana-admin-password";
      secretKeyFile = "${secrets}/grafana-secret-key";
    };
  };

  services.openssh.enable = true;

  # Only in `nixos-rebuild build-vm`: throw-away secrets generated at boot (a real host gets them
  # from its secret manager), more memory for the stack, and the service and Grafana forwarded to
  # the host's loopback.
  virtualisation.vmVariant = {
    virtualisation.memorySize = 3072;
    virtualisation.forwardPorts = [
      {
        from = "host";
        host.address = "127.0.0.1";
        host.port = config.services.warpwatch.port;
        guest.port = config.services.warpwatch.port;
      }
      {
        from = "host";
        host.address = "127.0.0.1";
        host.port = grafanaPort;
        guest.port = grafanaPort;
      }
    ];
    # QEMU's port forward arrives on the guest's network interface, not its loopback.
    services.warpwatch.grafana = {
      listenAddress = "0.0.0.0";
      openFirewall = true;
    };
    systemd.services.example-grafana-secrets = {
      description = "Throw-away Grafana secrets for the example VM";
      wantedBy = [ "grafana.service" ];
      before = [ "grafana.service" ];
      serviceConfig = {
        Type = "oneshot";
        UMask = "0077";
      };
      script = ''
        mkdir -p ${secrets}
        [ -e ${secrets}/grafana-secret-key ] || ${lib.getExe pkgs.openssl} rand -hex 32 > ${secrets}/grafana-secret-key
        # Demo only: the VM's admin password is printed to its journal.
        if [ ! -e ${secrets}/grafana-admin-password ]; then
          ${lib.getExe pkgs.openssl} rand -hex 12 > ${secrets}/grafana-admin-password
          echo "Grafana admin password: $(cat ${secrets}/grafana-admin-password)"
        fi
      '';
    };
  };
}
