# What the evaluated NixOS `options` say, in one place: where nixpkgs declares the Prometheus and
# journald settings the stack sets and reads back, and whether the host itself defined an option.
# Chosen by what `options` contain, never by a version string, so a host on nixos-26.05 and one on
# nixpkgs master (26.11) evaluate without an error or a warning:
#   - nixos-26.05: services.prometheus.{globalConfig,scrapeConfigs,ruleFiles,alertmanagers,
#     remoteWrite,retentionTime}; services.journald.extraConfig (lines).
#   - master: services.prometheus.settings.* (the old names are mkRenamedOptionModule aliases that
#     warn; `rules` became settings.rule_files); services.journald.settings.Journal (extraConfig is
#     an mkRemovedOptionModule: any definition fails evaluation, and so does reading it).
# nix/module.nix passes `shapeOf options` to the mapping; the offline tests pass either shape.
let
  inherit (import ../lib.nix) concatMerge;

  # { a = { b = value; }; } from [ "a" "b" ].
  setAt = path: value: builtins.foldl' (inner: name: { ${name} = inner; }) value (reverseList path);
  getAt = path: set: builtins.foldl' (inner: name: inner.${name}) set path;
  reverseList =
    list:
    let
      n = builtins.length list;
    in
    builtins.genList (i: builtins.elemAt list (n - 1 - i)) n;
in
rec {
  # The option tree nixos-26.05 declares; what a caller without `options` gets.
  nixos2605 = {
    prometheusSettings = false;
    journaldSettings = false;
  };
  # The option tree of nixpkgs master (26.11).
  settingsShape = {
    prometheusSettings = true;
    journaldSettings = true;
  };

  # The shape of an evaluated option tree. `settings` is tested, not the old names: master still
  # declares those as (renamed or removed) aliases.
  shapeOf = options: {
    prometheusSettings = options.services.prometheus ? settings;
    journaldSettings = options.services.journald ? settings;
  };

  # Paths under services.prometheus, by what they hold.
  prometheusPaths =
    shape:
    if shape.prometheusSettings then
      {
        global = [
          "settings"
          "global"
        ];
        scrapeConfigs = [
          "settings"
          "scrape_configs"
        ];
        # Files; promtool checks them at build time through `promtool check config`.
        ruleFiles = [
          "settings"
          "rule_files"
        ];
        alertmanagers = [
          "settings"
          "alerting"
          "alertmanagers"
        ];
        remoteWrite = [
          "settings"
          "remote_write"
        ];
        retention = [
          "settings"
          "storage"
          "tsdb"
          "retention"
          "time"
        ];
      }
    else
      {
        global = [ "globalConfig" ];
        scrapeConfigs = [ "scrapeConfigs" ];
        # Files; nixpkgs checks each with `promtool check rules` at build time.
        ruleFiles = [ "ruleFiles" ];
        alertmanagers = [ "alertmanagers" ];
        remoteWrite = [ "remoteWrite" ];
        retention = [ "retentionTime" ];
      };

  # One services.prometheus value from { <name of prometheusPaths> = value; }.
  prometheusValues =
    shape: values:
    builtins.foldl' concatMerge { } (
      map (name: setAt (prometheusPaths shape).${name} values.${name}) (builtins.attrNames values)
    );

  # The value at a path of prometheusPaths in an evaluated config.services.prometheus.
  prometheusValue =
    shape: name: prometheus:
    getAt (prometheusPaths shape).${name} prometheus;

  # The option holding journald's [Journal] settings, as the host's messages name it.
  journaldOption =
    shape:
    if shape.journaldSettings then
      "services.journald.settings.Journal"
    else
      "services.journald.extraConfig";

  # services.journald value setting `limits` ({ SystemMaxUse = "90M"; ... }) with `priority`
  # (mkDefault): on master key by key (a host's own keys win one by one), on 26.05 as lines (a
  # host's extraConfig replaces them all).
  journaldValues =
    shape: priority: limits:
    if shape.journaldSettings then
      { settings.Journal = builtins.mapAttrs (_: priority) limits; }
    else
      {
        extraConfig = priority (
          builtins.concatStringsSep "" (map (key: "${key}=${limits.${key}}\n") (builtins.attrNames limits))
        );
      };

  # The host's effective [Journal] settings as { key = value; }, from an evaluated
  # config.services.journald; never reads extraConfig where it is removed.
  journaldSettings =
    shape: journald:
    if shape.journaldSettings then
      journald.settings.Journal or { }
    else
      builtins.listToAttrs (
        builtins.concatMap (
          line:
          let
            parts = builtins.match "[[:space:]]*([A-Za-z]+)[[:space:]]*=[[:space:]]*(.*)" line;
          in
          if builtins.isString line && parts != null then
            [
              {
                name = builtins.head parts;
                value = builtins.elemAt parts 1;
              }
            ]
          else
            [ ]
        ) (builtins.split "\n" (journald.extraConfig or ""))
      );

  # Whether a module other than `file` defines `option` (an evaluated `options.<path>`): how the
  # stack tells a host that runs the service itself from one where only the stack turns it on.
  # Only definitions of the winning priority are listed, so a host's mkDefault does not count.
  definedElsewhere =
    file: option: builtins.any (definition: definition.file != file) option.definitionsWithLocations;
}
