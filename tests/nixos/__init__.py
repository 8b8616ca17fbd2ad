"""The NixOS mapping (nix/stack/nixos/) evaluated offline, and the units it yields."""
