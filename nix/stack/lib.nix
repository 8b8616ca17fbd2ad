# Builtins-only helpers for the stack renderers. nixpkgs' lib is not available here on purpose: the
# declaration and every rendering must evaluate offline with a bare `nix-instantiate`.
rec {
  # Merge `right` into `left`: attribute sets merge key by key, any other value is replaced.
  deepMerge =
    left: right:
    if builtins.isAttrs left && builtins.isAttrs right then
      left
      // builtins.mapAttrs (
        name: value: if builtins.hasAttr name left then deepMerge left.${name} value else value
      ) right
    else
      right;

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
