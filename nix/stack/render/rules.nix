# The Prometheus rules file: the rules generated from the declaration (the declared memory limits
# as recording rules, and TargetDown with its declared `for`), followed by the static alert groups
# of configs/prometheus/alerts.yml. The memory alert divides by `warpwatch:memory_limit_bytes`, so
# the limits it compares against are the declared ones.
{ stack, toYAML }:
let
  inherit (import ../lib.nix) duration;
  targetDownFor = duration stack.alerts.targetDownForSeconds;
  silentFor = duration stack.hosts.silentForSeconds;
  silentHoldFor = duration (4 * stack.prometheus.scrapeIntervalSeconds);
  expectedHosts = if stack.hosts.expected == null then [ ] else stack.hosts.expected;

  # One rule per expected host: no sample at all under its `host` label for `silentFor` (every
  # agent pushes `up` of its scrapes, so this holds when the host, its collector or the path to
  # the server is gone, which TargetDown cannot see: the agent's own `up` never arrives).
  silentHostGroup = {
    name = "warpwatch-hosts";
    rules = map (host: {
      alert = "HostSilent";
      expr = "absent_over_time(up{host=\"${host}\"}[${silentFor}])";
      # After the server itself was away longer than `silentFor`, every host looks silent until
      # its agent's backlog lands, seconds later: a few scrape intervals of patience keep that
      # from paging.
      for = silentHoldFor;
      labels = {
        severity = "page";
        inherit host;
      };
      annotations = {
        summary = "Host ${host} has sent nothing for ${silentFor}";
        description = "No sample from host ${host} reached this server in ${silentFor}: the host, its collector, or the network or TLS path to the receiver is down.";
      };
    }) expectedHosts;
  };

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
              # An agent's targets are 127.0.0.1 on every host: its `host` says which. Tight
              # braces keep the rendered line within yamllint's 120 columns.
              summary = "Target {{ $labels.instance }} of {{ $labels.service }}{{with $labels.host}} on {{.}}{{end}} is down";
              description = "Prometheus has failed to scrape {{ $labels.service }} for ${targetDownFor}.";
            };
          }
        ];
      }
    ]
    ++ (if stack.role == "server" && expectedHosts != [ ] then [ silentHostGroup ] else [ ]);
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
