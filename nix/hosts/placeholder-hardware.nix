# Placeholder disk and boot loader so an example configuration builds (`nixos-rebuild build-vm`
# replaces both). A real host uses its own hardware configuration instead of this file.
{
  fileSystems."/" = {
    device = "/dev/disk/by-label/nixos";
    fsType = "ext4";
  };
  boot.loader.grub.device = "/dev/vda";
}
