# The warpwatch service, built from the committed Cargo.lock (no vendor hash to keep in sync) with
# its own unit and integration tests run in the check phase.
{
  lib,
  stdenv,
  rustPlatform,
  util-linux,
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
      # The benchmark's baseline, a Cargo example target.
      ../bench/bare.rs
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

  # prlimit and setpriv, for the tests of a refused thread and of a privileged port.
  nativeCheckInputs = lib.optional stdenv.hostPlatform.isLinux util-linux;

  # Run by ./scripts/test (CI, as root), not in the build sandbox: four tests watch the service
  # or its writer with strace, which needs ptrace on a process that is not its own child (root
  # or CAP_SYS_PTRACE, neither granted here), and one needs two CPUs, which a builder may not
  # give.
  checkFlags = [
    "--skip=slow_requests_are_logged_at_warn"
    "--skip=process_metrics_are_read_from_proc_at_most_once_a_second"
    "--skip=a_clean_stop_reaps_the_writer_before_exiting"
    "--skip=each_write_fsyncs_the_file_then_renames_then_fsyncs_the_directory"
    "--skip=a_refused_thread_panics_in_one_error_line"
  ];

  meta = {
    inherit (manifest) description;
    license = lib.licenses.mit;
    mainProgram = "warpwatch";
    platforms = lib.platforms.linux ++ lib.platforms.darwin;
  };
}
