# The Grafana secrets of the VM tests: files copied into /etc with their mode set, so the paths
# are outside the store as the module requires, and given to the module (over a host file's own).
{ adminPassword }:
{ lib, ... }:
{
  environment.etc."warpwatch-test/grafana-admin-password" = {
    text = adminPassword;
    mode = "0400";
  };
  environment.etc."warpwatch-test/grafana-secret-key" = {
    text = "vm-test-secret-key-0123456789abcdef";
    mode = "0400";
  };
  services.warpwatch.grafana = {
    adminPasswordFile = lib.mkForce "/etc/warpwatch-test/grafana-admin-password";
    secretKeyFile = lib.mkForce "/etc/warpwatch-test/grafana-secret-key";
  };
}
