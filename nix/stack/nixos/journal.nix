# The journal: the default one (`journalctl -u` works for every unit, nixpkgs' reload logic finds
# its messages), bounded in files of the declared rotation size and in total by what compose
# allows each service, at a priority any journald setting of the host wins over.
{
  stack,
  mkDefault,
  host,
  nixpkgsShape,
  nixpkgsOptions,
  ...
}:
let
  serviceCount = builtins.length stack.activeServiceNames;
  journalLimits = {
    SystemMaxFileSize = "${toString stack.logging.maxSizeMiB}M";
    SystemMaxFiles = toString (stack.logging.maxFiles * serviceCount);
    SystemMaxUse = "${toString (stack.logging.maxSizeMiB * stack.logging.maxFiles * serviceCount)}M";
  };
  # The host's effective [Journal] settings: ours unless the host defines its own.
  hostJournal = host.journal or journalLimits;
  option = nixpkgsOptions.journaldOption nixpkgsShape;
in
{
  services.journald = nixpkgsOptions.journaldValues nixpkgsShape mkDefault journalLimits;
  # Only 26.05's extraConfig can lose the cap: a host's lines replace ours as a whole, whereas
  # master's settings.Journal keeps each of our keys the host does not set.
  warnings =
    if hostJournal ? SystemMaxUse then
      [ ]
    else
      [
        "${option} is set on this host without SystemMaxUse=, so it replaces the stack's journal limits (${
          builtins.concatStringsSep " " (
            map (key: "${key}=${journalLimits.${key}}") (builtins.attrNames journalLimits)
          )
        }): the journal may grow to journald's default (10% of the file system, at most 4G). Add the limits you want to ${option}."
      ];
}
