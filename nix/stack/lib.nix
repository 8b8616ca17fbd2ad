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
        name: value:
        if builtins.hasAttr name left then mergeWith joinLists left.${name} value else value
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

  mebibytes = n: n * 1024 * 1024;

  # Where one service reaches another: by compose service name on the stack network, or over
  # loopback on a NixOS host where every service binds 127.0.0.1.
  addressOf =
    caller: target: name:
    if target == "compose" then
      name
    else if target == "host" then
      "127.0.0.1"
    else
      throw "warpwatch stack: ${caller}: target must be \"compose\" or \"host\" (got ${builtins.toJSON target})";

  # The address a service listens on for `target`.
  listenAddress = target: if target == "host" then "127.0.0.1" else "0.0.0.0";
}
