# Overrides are checked against the declaration's shape (no unknown field, no wrong type), then the
# merged result against the rules below. Every message names the field and the offending value so
# the user can fix the override without reading this file.
let
  inherit (import ./lib.nix) activeServiceNames deepMerge;
  inherit (builtins)
    attrNames
    concatMap
    concatStringsSep
    elem
    hasAttr
    isAttrs
    isInt
    isString
    match
    toJSON
    typeOf
    ;

  fail = message: throw "warpwatch stack: ${message}";

  show = value: if isAttrs value then "an attribute set" else toJSON value;

  typeName =
    value:
    {
      int = "an integer";
      string = "a string";
      bool = "a boolean (true or false)";
      list = "a list";
      set = "an attribute set";
      float = "a floating-point number";
    }
    .${typeOf value} or (typeOf value);

  # Walk the override next to the declaration: every key must exist, every leaf keep its type.
  checkShape =
    path: declared: override:
    let
      where = concatStringsSep "." path;
      checkKey =
        key:
        let
          field = concatStringsSep "." (path ++ [ key ]);
        in
        if !hasAttr key declared then
          if path == [ "services" ] then
            fail "unknown service ${toJSON key} in overrides.services (known: ${concatStringsSep ", " (attrNames declared)})"
          else
            fail "unknown field ${field} in overrides (known at ${
              if path == [ ] then "top level" else where
            }: ${concatStringsSep ", " (attrNames declared)})"
        else if isAttrs declared.${key} then
          if isAttrs override.${key} then
            checkShape (path ++ [ key ]) declared.${key} override.${key}
          else
            fail "${field} must be an attribute set (got ${show override.${key}})"
        else if typeOf declared.${key} != typeOf override.${key} then
          fail "${field} must be ${typeName declared.${key}} (got ${show override.${key}})"
        else
          true;
    in
    builtins.all checkKey (attrNames override);

  positiveInt = value: isInt value && value > 0;
  nonNegativeInt = value: isInt value && value >= 0;

  rules =
    stack:
    let
      names = attrNames stack.services;
      active = activeServiceNames stack.logShipper;
      check = ok: message: if ok then [ ] else [ message ];
      positive =
        field: value: check (positiveInt value) "${field} must be a positive integer (got ${show value})";
      nonNegative =
        field: value:
        check (nonNegativeInt value) "${field} must be a non-negative integer (got ${show value})";
      absolute =
        field: value:
        check (
          match "/.*" value != null
        ) "${field} must be an absolute path starting with / (got ${show value})";
      nonEmpty = field: value: check (value != "") "${field} must not be empty";
      portRule =
        field: value:
        check (
          isInt value && value >= 1 && value <= 65535
        ) "${field} must be a port number between 1 and 65535 (got ${show value})";

      serviceRules =
        name:
        let
          s = stack.services.${name};
          field = key: "services.${name}.${key}";
        in
        portRule (field "port") s.port
        ++ positive (field "memoryMiB") s.memoryMiB
        ++ nonNegative (field "startPeriodSeconds") s.startPeriodSeconds
        ++ nonNegative (field "uid") s.uid
        ++ absolute (field "healthPath") s.healthPath
        ++ absolute (field "metricsPath") s.metricsPath
        ++ absolute (field "dataDir") s.dataDir
        ++ nonEmpty (field "image.name") s.image.name
        ++ nonEmpty (field "image.tag") s.image.tag
        ++
          check
            (
              s.healthcheckTest == [ ]
              || (
                builtins.all isString s.healthcheckTest
                && elem (builtins.head s.healthcheckTest) [
                  "CMD"
                  "CMD-SHELL"
                ]
                && builtins.length s.healthcheckTest > 1
              )
            )
            "${field "healthcheckTest"} must be [ ] (the built-in probe) or a list of strings starting with \"CMD\" or \"CMD-SHELL\" followed by the command (got ${show s.healthcheckTest})"
        ++ concatMap (
          dep:
          check (
            isString dep && elem dep names
          ) "${field "dependsOn"} names unknown service ${show dep} (known: ${concatStringsSep ", " names})"
          ++ check (dep != name) "${field "dependsOn"} must not contain the service itself (${show dep})"
          ++
            check (!(elem name active) || elem dep active)
              "${field "dependsOn"} names ${show dep}, which is not running with logShipper = ${show stack.logShipper}"
        ) s.dependsOn;

      # Every port a running service listens on, by the field that sets it.
      listeners =
        map (name: {
          field = "services.${name}.port";
          port = stack.services.${name}.port;
        }) active
        ++ [
          {
            field = "services.loki.grpcPort";
            port = stack.services.loki.grpcPort;
          }
        ];

      # Two listeners on one port: name both, the fix is on either side.
      clashes = concatMap (
        a:
        concatMap (
          b:
          check (
            a.field >= b.field || a.port != b.port
          ) "port clash: ${a.field} and ${b.field} are both ${toString a.port}"
        ) listeners
      ) listeners;
    in
    # Everything below assumes a known shipper (it decides which services run).
    if
      !(elem stack.logShipper [
        "promtail"
        "alloy"
      ])
    then
      [ "logShipper must be \"promtail\" or \"alloy\" (got ${show stack.logShipper})" ]
    else
      check (
        match "[a-z0-9][a-z0-9_-]*" stack.project != null
      ) "project must be lower-case letters, digits, - or _ (got ${show stack.project})"
      ++ nonEmpty "bindAddress" stack.bindAddress
      ++
        check (stack.logging.driver == "json-file")
          "logging.driver must be \"json-file\" (its rotation options are the ones rendered; got ${show stack.logging.driver})"
      ++ positive "logging.maxSizeMiB" stack.logging.maxSizeMiB
      ++ positive "logging.maxFiles" stack.logging.maxFiles
      ++ positive "healthcheck.intervalSeconds" stack.healthcheck.intervalSeconds
      ++ positive "healthcheck.timeoutSeconds" stack.healthcheck.timeoutSeconds
      ++ positive "healthcheck.retries" stack.healthcheck.retries
      ++ positive "healthcheck.startIntervalSeconds" stack.healthcheck.startIntervalSeconds
      ++
        check (stack.healthcheck.timeoutSeconds <= stack.healthcheck.intervalSeconds)
          "healthcheck.timeoutSeconds (${toString stack.healthcheck.timeoutSeconds}) must not exceed healthcheck.intervalSeconds (${toString stack.healthcheck.intervalSeconds})"
      ++ check (elem stack.restart [
        "no"
        "always"
        "on-failure"
        "unless-stopped"
      ]) "restart must be one of no, always, on-failure, unless-stopped (got ${show stack.restart})"
      ++ absolute "containerLogs.hostDir" stack.containerLogs.hostDir
      ++ positive "prometheus.scrapeIntervalSeconds" stack.prometheus.scrapeIntervalSeconds
      ++ positive "prometheus.evaluationIntervalSeconds" stack.prometheus.evaluationIntervalSeconds
      ++
        check (match "[0-9]+(ms|s|m|h|d|w|y)" stack.prometheus.retention != null)
          "prometheus.retention must be a Prometheus duration such as \"15d\" (got ${show stack.prometheus.retention})"
      ++ portRule "services.loki.grpcPort" stack.services.loki.grpcPort
      ++ positive "loki.retentionHours" stack.loki.retentionHours
      ++ positive "journal.maxAgeHours" stack.journal.maxAgeHours
      ++ concatMap serviceRules names
      ++ clashes;
in
declaration: overrides:
let
  merged = deepMerge declaration overrides;
  errors = rules merged;
in
if !isAttrs overrides then
  fail "overrides must be an attribute set (got ${show overrides})"
else if !(checkShape [ ] declaration overrides) then
  fail "overrides do not match the declaration"
else if errors != [ ] then
  fail (concatStringsSep "\n  " errors)
else
  merged
