# The Prometheus rules file: recording rules generated from the declaration, followed by the static
# alert groups of configs/prometheus/alerts.yml. The memory alert divides by
# `warpwatch:memory_limit_bytes`, so the limits it compares against are the declared ones.
{ stack, toYAML }:
let
  recording = toYAML {
    groups = [
      {
        name = "warpwatch-declared-limits";
        rules = map (name: {
          record = "warpwatch:memory_limit_bytes";
          expr = "vector(${toString stack.services.${name}.memoryBytes})";
          labels = {
            job = name;
          };
        }) stack.activeServiceNames;
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
recording + builtins.concatStringsSep "\n" (afterHeader alertLines)
