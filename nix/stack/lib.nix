# Builtins-only helpers for the stack renderers. nixpkgs' lib is not available here on purpose: the
# declaration and every rendering must evaluate offline with a bare `nix-instantiate`.
rec {
  # Merge `right` into `left` key by key; any other value is replaced, except that two lists are
  # joined by `joinLists`.
  mergeWith =
    joinLists: left: right:
    if builtins.isAttrs left && builtins.isAttrs right then
      left
      // builtins.mapAttrs (
        name: value: if builtins.hasAttr name left then mergeWith joinLists left.${name} value else value
      ) right
    else if builtins.isList left && builtins.isList right then
      joinLists left right
    else
      right;

  # User overrides of the declaration: a list given replaces the declared one.
  deepMerge = mergeWith (_: right: right);

  # Fragments of configuration that accumulate (NixOS option values): lists are concatenated.
  concatMerge = mergeWith (left: right: left ++ right);

  # Keep the attributes of `set` for which `pred name value` holds.
  filterAttrs =
    pred: set:
    builtins.listToAttrs (
      builtins.concatMap (
        name:
        if pred name set.${name} then
          [
            {
              inherit name;
              value = set.${name};
            }
          ]
        else
          [ ]
      ) (builtins.attrNames set)
    );

  # { name = f name; } for every name of a list.
  genAttrs =
    names: f:
    builtins.listToAttrs (
      map (name: {
        inherit name;
        value = f name;
      }) names
    );

  # Prefix every attribute name (used to place rendered files under a directory).
  prefixNames =
    prefix: set:
    builtins.listToAttrs (
      map (name: {
        name = prefix + name;
        value = set.${name};
      }) (builtins.attrNames set)
    );

  seconds = n: "${toString n}s";

  # A Prometheus/Alertmanager duration a reader takes in at a glance: whole minutes as minutes.
  duration =
    secs: if secs >= 60 && secs - secs / 60 * 60 == 0 then "${toString (secs / 60)}m" else seconds secs;

  mebibytes = n: n * 1024 * 1024;

  # The services that run in a stack's role: a server runs everything but the log shipper not
  # chosen and the collector, plus the receiver when agents push to it; an agent runs the
  # service, the node exporter and the two collectors that push to the server.
  activeServiceNames =
    stack:
    if stack.role == "agent" then
      [
        "warpwatch"
        "node-exporter"
        "collector"
        stack.logShipper
      ]
    else
      [
        "warpwatch"
        "prometheus"
        "loki"
        stack.logShipper
        "grafana"
        "alertmanager"
        "node-exporter"
      ]
      ++ (if stack.receiver.enable then [ "receiver" ] else [ ]);

  # Every alert rule carries one of these as its `severity` label: "page" wakes someone up,
  # "ticket" waits for working hours. The route tree sends each to its receiver.
  severities = [
    "page"
    "ticket"
  ];

  # Where a container probes itself, and where every service binds on a NixOS host.
  loopback = "127.0.0.1";

  # POSIX extended regular expressions (builtins.match takes them whole; the agent app anchors
  # them with ^( )$ for bash's =~), so the declaration and `nix run .#agent` share one rule.
  # A host name: the `host` label of everything an agent sends.
  hostNamePattern = "[a-z0-9][a-z0-9._-]*";
  # The server's receiver as an agent dials it: a DNS name or IPv4 address, or a bracketed IPv6
  # address, and a port. Nothing a YAML string or URL would need to escape.
  serverAddressPattern = "([A-Za-z0-9.-]+|[[][0-9A-Fa-f:.]+[]]):[0-9]+";

  # `target` is "compose" (containers on the stack network) or "host" (one NixOS machine);
  # anything else is a caller's mistake, reported with the caller's name.
  checkTarget =
    caller: target:
    if target == "compose" || target == "host" then
      target
    else
      throw "warpwatch stack: ${caller}: target must be \"compose\" or \"host\" (got ${builtins.toJSON target})";

  # Where one service reaches another: by compose service name on the stack network, or over
  # loopback on a host.
  addressOf =
    caller: target: name:
    if checkTarget caller target == "compose" then name else loopback;

  # The address a service listens on: every interface inside its container, loopback on a host.
  listenAddress = caller: target: if checkTarget caller target == "host" then loopback else "0.0.0.0";
}
