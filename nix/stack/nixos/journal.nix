# The journal: the default one (`journalctl -u` works for every unit, nixpkgs' reload logic finds
# its messages), bounded in files of the declared rotation size and in total by what compose
# allows each service, at a priority any journald setting of the host wins over.
{
  stack,
  mkDefault,
  host,
  ...
}:
let
  serviceCount = builtins.length stack.activeServiceNames;
  journalLimits = ''
    SystemMaxFileSize=${toString stack.logging.maxSizeMiB}M
    SystemMaxFiles=${toString (stack.logging.maxFiles * serviceCount)}
    SystemMaxUse=${toString (stack.logging.maxSizeMiB * stack.logging.maxFiles * serviceCount)}M
  '';
  hostJournal = host.journaldExtraConfig or journalLimits;
in
{
  services.journald.extraConfig = mkDefault journalLimits;
  warnings =
    if
      hostJournal == journalLimits
      || builtins.any (line: builtins.match "SystemMaxUse=.*" line != null) (
        builtins.filter builtins.isString (builtins.split "\n" hostJournal)
      )
    then
      [ ]
    else
      [
        "services.journald.extraConfig is set on this host without SystemMaxUse=, so it replaces the stack's journal limits (${
          builtins.replaceStrings [ "\n" ] [ " " ] journalLimits
        }): the journal may grow to journald's default (10% of the file system, at most 4G). Add the limits you want to services.journald.extraConfig."
      ];
}
