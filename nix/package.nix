# The warpwatch service, built from the committed Cargo.lock (no vendor hash to keep in sync) with
# its own unit and integration tests run in the check phase.
{
  lib,
  rustPlatform,
}:
let
  manifest = (lib.importTOML ../Cargo.toml).package;

  # Only what cargo reads: editing the README, the Nix files or the Python tests must not rebuild
  # (and re-test) the service.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../src
      (lib.fileset.fileFilter (file: file.hasExt "rs") ../tests)
      ../examples
    ];
  };
in
rustPlatform.buildRustPackage {
  pname = manifest.name;
  inherit (manifest) version;
  inherit src;

  cargoLock.lockFile = ../Cargo.lock;

  # The integration tests start the real binary on loopback sockets.
  __darwinAllowLocalNetworking = true;

  meta = {
    inherit (manifest) description;
    license = lib.licenses.mit;
    mainProgram = "warpwatch";
    platforms = lib.platforms.linux ++ lib.platforms.darwin;
  };
}
