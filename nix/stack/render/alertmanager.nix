# alertmanager.yml as an attribute set, from the declaration's `alerts`: the declared receivers,
# a route tree grouping by alert name and service, `severity="page"` to the paging receiver, and
# an inhibition that keeps a service that is down from also alerting on its other symptoms.
#
# Secrets stay files: every secret of a receiver is rendered as a `*_file` field naming where the
# running Alertmanager sees the file (compose secrets under /run/secrets, systemd credentials on a
# host); `secrets` lists each with the file on the machine that the target delivers there.
# Checked with amtool (tests/stack/test_alertmanager.py).
stack:
let
  inherit (import ../lib.nix) checkTarget duration;
  inherit (builtins)
    attrNames
    concatMap
    head
    length
    ;
  inherit (stack) alerts;

  receiverNames = attrNames alerts.receivers;

  # Where alerts go when no receiver is declared: nowhere, under a name that says so in
  # Alertmanager's UI, logs and metrics.
  nullReceiver = "${stack.project}-no-receiver-declared";

  defaultReceiver =
    if alerts.defaultReceiver != null then
      alerts.defaultReceiver
    else if length receiverNames == 1 then
      head receiverNames
    else
      nullReceiver;

  # Every secret file of every receiver: its name (a compose secret, a systemd credential), the
  # file on the machine running the stack, and the receiver and field it serves.
  secrets = concatMap (
    receiver:
    let
      r = alerts.receivers.${receiver};
      one = kind: field: file: [
        {
          name = "alertmanager-${receiver}-${kind}";
          inherit file receiver field;
        }
      ];
    in
    (
      if r ? webhook && r.webhook.urlFile or null != null then
        one "webhook-url" "webhook.urlFile" r.webhook.urlFile
      else
        [ ]
    )
    ++ (
      if r ? email && r.email.authPasswordFile or null != null then
        one "smtp-password" "email.authPasswordFile" r.email.authPasswordFile
      else
        [ ]
    )
  ) receiverNames;

  secretDirectory =
    target:
    if checkTarget "configs.alertmanager" target == "compose" then
      "/run/secrets"
    else
      "/run/credentials/alertmanager.service";

  renderReceiver =
    target: name:
    let
      r = alerts.receivers.${name};
      secretPath = kind: "${secretDirectory target}/alertmanager-${name}-${kind}";
    in
    {
      inherit name;
    }
    // (
      if r ? webhook then
        {
          webhook_configs = [
            (
              {
                send_resolved = true;
              }
              // (
                if r.webhook.urlFile or null != null then
                  { url_file = secretPath "webhook-url"; }
                else
                  { inherit (r.webhook) url; }
              )
            )
          ];
        }
      else
        { }
    )
    // (
      if r ? email then
        {
          email_configs = [
            (
              {
                inherit (r.email) to from smarthost;
                require_tls = r.email.requireTls or true;
                send_resolved = true;
              }
              // (
                if r.email.authUsername or null != null then
                  {
                    auth_username = r.email.authUsername;
                    auth_password_file = secretPath "smtp-password";
                  }
                else
                  { }
              )
            )
          ];
        }
      else
        { }
    );

  matcher = label: value: "${label}=${builtins.toJSON value}";

  routes =
    map (route: {
      inherit (route) receiver;
      matchers =
        (if route.severity or null != null then [ (matcher "severity" route.severity) ] else [ ])
        ++ (if route.service or null != null then [ (matcher "service" route.service) ] else [ ]);
    }) alerts.routes
    ++ (
      if alerts.pagingReceiver != null then
        [
          {
            receiver = alerts.pagingReceiver;
            matchers = [ (matcher "severity" "page") ];
          }
        ]
      else
        [ ]
    );
in
{
  inherit
    secrets
    defaultReceiver
    nullReceiver
    receiverNames
    ;
  # True when alerts reach nobody: the stack app and the NixOS module say so.
  noReceiver = receiverNames == [ ];

  __functor =
    _:
    { target }:
    {
      route = {
        receiver = defaultReceiver;
        # `service` is on every series (see ./prometheus.nix); host alerts carry the node
        # exporter's.
        group_by = [
          "alertname"
          "service"
        ];
        group_wait = duration alerts.groupWaitSeconds;
        group_interval = duration alerts.groupIntervalSeconds;
        repeat_interval = "${toString alerts.repeatIntervalHours}h";
      }
      // (if routes != [ ] then { inherit routes; } else { });
      # A target that is down cannot serve: its error, latency and memory alerts say nothing more
      # and would page twice. Equal `service` keeps another service's alerts going.
      inhibit_rules = [
        {
          source_matchers = [ (matcher "alertname" "TargetDown") ];
          target_matchers = [ "alertname!=${builtins.toJSON "TargetDown"}" ];
          equal = [ "service" ];
        }
      ];
      receivers =
        if receiverNames == [ ] then
          [ { name = nullReceiver; } ]
        else
          map (renderReceiver target) receiverNames;
    };
}
