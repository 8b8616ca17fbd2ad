# `nix run`: the service with per-user defaults (./run-app.sh): data in the user's state directory,
# listening on loopback at the declaration's port.
{
  coreutils,
  writeShellApplication,
  warpwatch,
  # The validated stack declaration (`(import ./stack { }).stack`).
  stack,
}:
writeShellApplication {
  name = "warpwatch-run";
  runtimeInputs = [
    coreutils
    warpwatch
  ];
  runtimeEnv.WARPWATCH_DEFAULT_ADDR = "${stack.bindAddress}:${toString stack.services.warpwatch.port}";
  text = builtins.readFile ./run-app.sh;
  meta = {
    description = "Start warpwatch on ${stack.bindAddress} with its data in the per-user state directory";
    mainProgram = "warpwatch-run";
  };
}
