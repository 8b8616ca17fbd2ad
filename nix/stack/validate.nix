# Overrides are checked against the declaration's shape (no unknown field, no wrong type), then the
# merged result against the rules below. Every message names the field and the offending value so
# the user can fix the override without reading this file.
let
  inherit (import ./lib.nix) activeServiceNames deepMerge severities;
  inherit (builtins)
    attrNames
    concatMap
    concatStringsSep
    elem
    hasAttr
    isAttrs
    isBool
    isInt
    isList
    isPath
    isString
    match
    toJSON
    typeOf
    ;

  fail = message: throw "warpwatch stack: ${message}";

  # Never toJSON a path: that would copy the file into the store, the very thing a path-valued
  # secret must not do.
  show =
    value:
    if isAttrs value then
      "an attribute set"
    else if isPath value then
      "the Nix path ${toString value}"
    else
      toJSON value;

  # Parts of the declaration whose keys are the user's own (receiver names): checked by the
  # rules below instead of against the declaration's shape.
  freeform = [ "alerts.receivers" ];

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
        if elem where freeform then
          true
        # Declared null: no value by default, any type allowed; the rules below check it.
        else if hasAttr key declared && declared.${key} == null then
          true
        else if !hasAttr key declared then
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

  # A secret file: an absolute path string outside the Nix store, never a Nix path.
  secretFile =
    field: value:
    if isPath value then
      [
        "${field} is ${show value}: a Nix path is copied into the world-readable Nix store. Give the file's location as a string instead, e.g. ${field} = \"${toString value}\" (the file stays where it is and is read at run time)."
      ]
    else if !(isString value) then
      [
        "${field} must be a string naming the secret file, e.g. \"/run/keys/alertmanager\" (got ${show value})"
      ]
    else if match "/.*" value == null then
      [ "${field} must be an absolute path to the secret file (got ${show value})" ]
    else if match "/nix/store/.*" value != null then
      [
        "${field} is in the Nix store (${value}), readable by every user of the machine: keep the secret in a file outside it, e.g. under /run/keys or /etc/warpwatch, and give that path."
      ]
    else
      [ ];

  # `alerts`: receivers, routes and timers. Every message names the field and what to do.
  alertRules =
    stack:
    let
      inherit (stack) alerts;
      check = ok: message: if ok then [ ] else [ message ];
      receiverNames = if isAttrs alerts.receivers then attrNames alerts.receivers else [ ];
      knownReceivers =
        if receiverNames == [ ] then
          "none is declared"
        else
          "declared: ${concatStringsSep ", " receiverNames}";
      serviceNames = attrNames stack.services;
      # Only these keys, each with a message of its own for a missing or wrong value.
      onlyKeys =
        field: allowed: set:
        concatMap (
          key:
          check (elem key allowed) "${field}.${key} is not a known field (known: ${concatStringsSep ", " allowed})"
        ) (attrNames set);
      nonEmptyString =
        field: value:
        check (isString value && value != "") "${field} must be a non-empty string (got ${show value})";

      webhookRules =
        field: webhook:
        if !(isAttrs webhook) then
          [
            "${field} must be an attribute set such as { urlFile = \"/run/keys/oncall-url\"; } (got ${show webhook})"
          ]
        else
          onlyKeys field [
            "url"
            "urlFile"
          ] webhook
          ++ (
            if webhook ? url && webhook ? urlFile then
              [ "${field} has both url and urlFile: keep urlFile when the URL carries a token, url otherwise" ]
            else if webhook ? urlFile then
              secretFile "${field}.urlFile" webhook.urlFile
            else if webhook ? url then
              check (isString webhook.url && match "https?://.+" webhook.url != null)
                "${field}.url must be an http:// or https:// URL (got ${show webhook.url}); a URL carrying a token belongs in a file named by ${field}.urlFile"
            else
              [
                "${field} has no URL: set ${field}.urlFile to a file holding the URL (it carries a token), or ${field}.url when it carries no secret"
              ]
          );

      emailRules =
        field: email:
        if !(isAttrs email) then
          [ "${field} must be an attribute set with smarthost, from and to (got ${show email})" ]
        else
          onlyKeys field [
            "smarthost"
            "from"
            "to"
            "requireTls"
            "authUsername"
            "authPasswordFile"
          ] email
          ++
            concatMap
              (
                key:
                if email ? ${key} then
                  nonEmptyString "${field}.${key}" email.${key}
                else
                  [ "${field} has no ${key}: set ${field}.${key}" ]
              )
              [
                "smarthost"
                "from"
                "to"
              ]
          ++
            check (!(isString (email.smarthost or null)) || match "[^:]+:[0-9]+" email.smarthost != null)
              "${field}.smarthost must be host:port, such as \"smtp.example.org:587\" (got ${show email.smarthost})"
          ++
            concatMap
              (
                key:
                check (
                  !(isString (email.${key} or null)) || match "[^@]+@[^@]+" email.${key} != null
                ) "${field}.${key} must be an e-mail address (got ${show email.${key}})"
              )
              [
                "from"
                "to"
              ]
          ++ check (isBool (
            email.requireTls or true
          )) "${field}.requireTls must be true or false (got ${show email.requireTls})"
          ++ (
            if (email ? authUsername) != (email ? authPasswordFile) then
              [
                "${field}: authUsername and authPasswordFile go together: set both to log in to the smarthost, or neither"
              ]
            else if email ? authUsername then
              nonEmptyString "${field}.authUsername" email.authUsername
              ++ secretFile "${field}.authPasswordFile" email.authPasswordFile
            else
              [ ]
          );

      receiverRules =
        name:
        let
          field = "alerts.receivers.${name}";
          r = alerts.receivers.${name};
        in
        check (match "[a-z0-9][a-z0-9_-]*" name != null)
          "${field}: a receiver name is lower-case letters, digits, - or _ (it names secrets and credentials)"
        ++ (
          if !(isAttrs r) then
            [ "${field} must be an attribute set with webhook or email (got ${show r})" ]
          else
            onlyKeys field [
              "webhook"
              "email"
            ] r
            ++ (
              if r ? webhook && r ? email then
                [ "${field} has both webhook and email: declare two receivers, one each" ]
              else if r ? webhook then
                webhookRules "${field}.webhook" r.webhook
              else if r ? email then
                emailRules "${field}.email" r.email
              else
                [
                  "${field} has neither webhook nor email: add webhook = { urlFile = \"/run/keys/…\"; } or email = { smarthost = …; from = …; to = …; }"
                ]
            )
        );

      receiverRef =
        field: value:
        check (value == null || (isString value && elem value receiverNames))
          "${field} names receiver ${show value}, which is not declared (${knownReceivers}): add it to alerts.receivers or name a declared one";

      routeRules =
        index: route:
        let
          field = "alerts.routes.${toString index}";
        in
        if !(isAttrs route) then
          [
            "${field} must be an attribute set such as { severity = \"page\"; receiver = \"oncall\"; } (got ${show route})"
          ]
        else
          onlyKeys field [
            "receiver"
            "severity"
            "service"
          ] route
          ++ (
            if route ? receiver then
              check (route.receiver != null) "${field}.receiver must name a receiver"
              ++ receiverRef "${field}.receiver" route.receiver
            else
              [ "${field} has no receiver: set ${field}.receiver to one of alerts.receivers (${knownReceivers})" ]
          )
          ++
            check (!(route ? severity) || elem route.severity severities)
              "${field}.severity must be one of ${concatStringsSep ", " severities} (got ${show route.severity or null})"
          ++
            check (!(route ? service) || elem route.service serviceNames)
              "${field}.service must be a service of the declaration (${concatStringsSep ", " serviceNames}; got ${show route.service or null})"
          ++
            check (route ? severity || route ? service)
              "${field} matches every alert: give it a severity or a service, or make its receiver alerts.defaultReceiver";
    in
    if !(isAttrs alerts.receivers) then
      [ "alerts.receivers must be an attribute set of receivers by name (got ${show alerts.receivers})" ]
    else
      concatMap receiverRules receiverNames
      ++ receiverRef "alerts.defaultReceiver" alerts.defaultReceiver
      ++ receiverRef "alerts.pagingReceiver" alerts.pagingReceiver
      ++
        check (alerts.defaultReceiver != null || builtins.length receiverNames <= 1)
          "alerts.defaultReceiver is not set and several receivers are declared (${concatStringsSep ", " receiverNames}): name the one that gets every alert no route takes"
      ++ (
        if isList alerts.routes then
          builtins.concatLists (
            builtins.genList (i: routeRules i (builtins.elemAt alerts.routes i)) (builtins.length alerts.routes)
          )
        else
          [ "alerts.routes must be a list (got ${show alerts.routes})" ]
      );
  nonNegativeInt = value: isInt value && value >= 0;

  rules =
    hostsFieldPrefix: stack:
    let
      names = attrNames stack.services;
      active = activeServiceNames stack;
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
              "${field "dependsOn"} names ${show dep}, which is not running in this role (role = ${show stack.role}) with logShipper = ${show stack.logShipper}"
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
      ++ clashes
      ++ positive "alerts.groupWaitSeconds" stack.alerts.groupWaitSeconds
      ++ positive "alerts.groupIntervalSeconds" stack.alerts.groupIntervalSeconds
      ++ positive "alerts.repeatIntervalHours" stack.alerts.repeatIntervalHours
      ++ positive "alerts.targetDownForSeconds" stack.alerts.targetDownForSeconds
      ++ alertRules stack
      ++ import ./validate-hosts.nix { inherit show secretFile hostsFieldPrefix; } stack;
in
{
  # Put before the names of the many-hosts fields (role, hosts, receiver, agent) in messages:
  # nix/module.nix declares those fields as options under this prefix.
  hostsFieldPrefix ? "",
}:
declaration: overrides:
let
  merged = deepMerge declaration overrides;
  errors = rules hostsFieldPrefix merged;
in
if !isAttrs overrides then
  fail "overrides must be an attribute set (got ${show overrides})"
else if !(checkShape [ ] declaration overrides) then
  fail "overrides do not match the declaration"
else if errors != [ ] then
  fail (concatStringsSep "\n  " errors)
else
  merged
