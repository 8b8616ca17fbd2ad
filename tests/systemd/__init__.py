"""The service's NixOS units under a real systemd, in a container."""
