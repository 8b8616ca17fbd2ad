# The Prometheus rules file: the rules generated from the declaration (the declared memory limits
# as recording rules, and TargetDown with its declared `for`), followed by the static alert groups
# of configs/prometheus/alerts.yml. The memory alert divides by `warpwatch:memory_limit_bytes`, so
# the limits it compares against are the declared ones.
{ stack, toYAML }:
let
  inherit (import ../lib.nix) duration;
  targetDownFor = duration stack.alerts.targetDownForSeconds;

  generated = toYAML {
    groups = [
      {
        name = "warpwatch-declared-limits";
        rules = map (name: {
          record = "warpwatch:memory_limit_bytes";
          expr = "vector(${toString stack.services.${name}.memoryBytes})";
          labels = {
            job = name;
            service = name;
          };
        }) stack.activeServiceNames;
      }
      {
        # Every scrape job, the node exporter's too (a host that stops answering).
        name = "warpwatch-targets";
        rules = [
          {
            alert = "TargetDown";
            expr = "up == 0";
            for = targetDownFor;
            labels.severity = "page";
            annotations = {
              summary = "Target {{ $labels.instance }} of {{ $labels.service }} is down";
              description = "Prometheus has failed to scrape {{ $labels.service }} for ${targetDownFor}.";
            };
          }
        ];
      }
    ];
  };

  # Both parts start with `groups:`; keep the alert file's group items and drop its header
  # (comments and the `groups:` line) so the result is one document. The renderer and the alert
  # file both indent sequence items by two spaces, which the combined file's promtool check proves.
  alertLines = builtins.filter builtins.isString (
    builtins.split "\n" (builtins.readFile ../../../configs/prometheus/alerts.yml)
  );
  afterHeader =
    lines:
    if lines == [ ] then
      throw "warpwatch stack: configs/prometheus/alerts.yml must contain a top-level `groups:` line"
    else if builtins.head lines == "groups:" then
      builtins.tail lines
    else
      afterHeader (builtins.tail lines);
in
generated + builtins.concatStringsSep "\n" (afterHeader alertLines)
