# The log shipper (Promtail or Alloy, per `logShipper`) in a unit of the stack's own: nixpkgs
# 26.05 has no Promtail module, and services.alloy belongs to the host, which may run its own
# pipeline there. It reads the whole default journal and ships it to Loki: the server's own, or
# on an agent the server's receiver over mutual TLS, with the TLS files as systemd credentials.
{
  stack,
  configs,
  toYAML,
  promtail,
  alloy,
  host,
  unitNames,
  unitOf,
  daemonSandbox,
  hostPort,
  ...
}:
let
  inherit (import ../lib.nix) loopback;
  inherit (stack) services;
  shipper = stack.logShipper;
  isAgent = stack.role == "agent";

  shipperUnitName = unitNames.${shipper};
  shipperStateDir = "/var/lib/${shipperUnitName}";
  credentialsDir = "/run/credentials/${shipperUnitName}.service";
  shipperConfigText = toYAML (
    configs.promtail (
      {
        target = "host";
        stateDir = shipperStateDir;
        inherit unitNames;
      }
      // (if isAgent then { tlsDir = credentialsDir; } else { })
    )
  );
  shipperConfigPath = "${shipperUnitName}/promtail.yaml";

  shipperCommand = {
    promtail = "${promtail}/bin/promtail -config.file=/etc/${shipperConfigPath}";
    alloy = builtins.concatStringsSep " " [
      "${alloy}/bin/alloy run"
      "--config.format=promtail"
      "--server.http.listen-addr=${hostPort loopback services.alloy.port}"
      "--storage.path=${shipperStateDir}"
      "--disable-reporting"
      "/etc/${shipperConfigPath}"
    ];
  };
  shipperPackage = {
    inherit promtail alloy;
  };

  # Reads the whole default journal (the systemd-journal group) and writes its positions to
  # its state directory only.
  shipperUnit = {
    description = "${
      if shipper == "promtail" then "Promtail (end-of-life upstream)" else "Grafana Alloy"
    } shipping the journal to ${if isAgent then "the monitoring server" else "Loki"}";
    wantedBy = [ "multi-user.target" ];
    after = [ "network.target" ] ++ (if isAgent then [ ] else [ "loki.service" ]);
    restartTriggers = [ shipperConfigText ];
    serviceConfig =
      daemonSandbox
      // {
        ExecStart = shipperCommand.${shipper};
        MemoryMax = "${toString services.${shipper}.memoryMiB}M";
        DynamicUser = true;
        # No PrivateUsers: a user namespace would leave the systemd-journal group unmapped.
        SupplementaryGroups = [ "systemd-journal" ];
        StateDirectory = shipperUnitName;
        Restart = "always";
        RestartSec = "2s";
        TimeoutStopSec = "10s";
      }
      // (
        if isAgent then { LoadCredential = import ./agent-credentials.nix stack credentialsDir; } else { }
      );
  };

  # The host's own services.alloy listens on Alloy's default 127.0.0.1:12345 unless its flags
  # say otherwise; two Alloys cannot bind one port.
  alloyDefaultPort = "12345";
  hostAlloy = {
    enable = false;
    extraFlags = [ ];
  }
  // host.alloy or { };
  hostAlloyPort =
    let
      flags = builtins.filter (flag: flag != null) (
        map (builtins.match "--server\\.http\\.listen-addr=.*:([0-9]+)") hostAlloy.extraFlags
      );
    in
    if flags == [ ] then alloyDefaultPort else builtins.head (builtins.head flags);
  alloyPortProblems =
    if shipper == "alloy" && hostAlloy.enable && hostAlloyPort == toString services.alloy.port then
      [
        {
          assertion = false;
          message = "services.alloy (this host's own Alloy) listens on port ${hostAlloyPort}, which the stack's shipper ${unitOf "alloy"} also needs: set services.warpwatch.monitoring.overrides.services.alloy.port to a free port, or move the host's Alloy with a --server.http.listen-addr= in services.alloy.extraFlags.";
        }
      ]
    else
      [ ];
in
{
  environment.etc.${shipperConfigPath}.text = shipperConfigText;
  systemd.services =
    if shipperPackage.${shipper} == null then { } else { ${shipperUnitName} = shipperUnit; };
  assertions = [
    {
      assertion = shipperPackage.${shipper} != null;
      message =
        if shipper == "promtail" then
          "services.warpwatch.monitoring.logShipper = \"promtail\" needs services.warpwatch.monitoring.promtailPackage (nixpkgs 26.05 has no promtail; the flake's nixosModules.default sets it from nixos-25.11), or use logShipper = \"alloy\"."
        else
          "services.warpwatch.monitoring.logShipper = \"alloy\" needs services.warpwatch.monitoring.alloyPackage.";
    }
  ]
  ++ alloyPortProblems;
  warnings =
    if shipper == "promtail" then
      [
        "services.warpwatch.monitoring.logShipper = \"promtail\": Promtail is end-of-life upstream (the version is whatever nixos-25.11 ships, with no further upstream support), removed from nixpkgs 26.05. Switch to \"alloy\", which runs the same configuration."
      ]
    else
      [ ];
}
