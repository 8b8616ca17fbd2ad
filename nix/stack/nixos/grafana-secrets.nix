# Grafana's admin password and secret key: files outside the Nix store, loaded as systemd
# credentials. A secret the host's own services.grafana.settings already provides wins; the file
# option is then neither required nor used.
{
  grafana,
  ourGrafanaSecret,
  hostGrafana,
  ...
}:
let
  secretFile =
    option: example: setting: ourValue: hostValue: value:
    if hostValue != ourValue then
      {
        credentials = [ ];
        problems = [ ];
        warnings =
          if value == null then
            [ ]
          else
            [
              "services.warpwatch.grafana.${option} is not used: this host sets services.grafana.settings.security.${setting} itself, and the host's setting wins. Remove one of the two."
            ];
      }
    else
      {
        credentials = if value == null then [ ] else [ "${example}:${value}" ];
        warnings = [ ];
        problems =
          if value == null then
            [
              "services.warpwatch.grafana.${option} must be set when services.warpwatch.monitoring.enable is true (or set services.grafana.settings.security.${setting} yourself): an absolute path to a root-readable file outside the Nix store (e.g. \"/run/secrets/grafana-${example}\"), created before the service starts."
            ]
          else if builtins.match "/.*" value == null then
            [
              "services.warpwatch.grafana.${option} must be an absolute path (got ${builtins.toJSON value})."
            ]
          else if builtins.match "/nix/store/.*" value != null then
            [
              "services.warpwatch.grafana.${option} points into the Nix store (${value}), which is world-readable: keep the secret outside the store, e.g. in /run/secrets."
            ]
          else
            [ ];
      };
  secrets = [
    (secretFile "adminPasswordFile" "admin-password" "admin_password" ourGrafanaSecret.adminPassword
      hostGrafana.adminPassword
      grafana.adminPasswordFile
    )
    (secretFile "secretKeyFile" "secret-key" "secret_key" ourGrafanaSecret.secretKey
      hostGrafana.secretKey
      grafana.secretKeyFile
    )
  ];
  fromSecrets = what: builtins.concatMap (secret: secret.${what}) secrets;
in
{
  systemd.services.grafana.serviceConfig.LoadCredential = fromSecrets "credentials";
  assertions = map (message: {
    assertion = false;
    inherit message;
  }) (fromSecrets "problems");
  warnings = fromSecrets "warnings";
}
