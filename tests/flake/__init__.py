"""flake.nix and nix/*.nix evaluated offline with a stand-in nixpkgs, and the `nix run` scripts."""
