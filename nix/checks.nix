# `nix flake check` on Linux: the package with its tests, the Rust lints, Nix formatting, the
# offline validations of the rendered stack, the NixOS VM test for each log shipper, and the
# two-host VM test of many hosts.
{
  lib,
  runCommand,
  cargo,
  clippy,
  docker-compose,
  nixfmt,
  prometheus,
  prometheus-alertmanager,
  rustfmt,
  testers,
  writeText,
  warpwatch,
  # ./stack/image-specs.nix evaluated for this system, and the packaged compose project.
  specs,
  compose,
  nixosModule,
}:
let
  inherit (specs.api) configs toYAML;

  # promtool resolves rule files against the config's directory, so the check renders the compose
  # config with the rules next to it (the compose file mounts them at an absolute path instead).
  prometheusConfig = writeText "prometheus.yml" (
    toYAML (
      configs.prometheus {
        target = "compose";
        ruleFiles = [ "rules.yml" ];
      }
    )
  );
  rules = writeText "rules.yml" configs.rules;
  alertmanagerConfig = writeText "alertmanager.yml" (
    toYAML (configs.alertmanager { target = "compose"; })
  );

  vmTest =
    logShipper:
    testers.runNixOSTest (
      import ./tests/vm.nix {
        module = nixosModule;
        inherit logShipper;
      }
    );
in
{
  package = warpwatch;

  clippy = warpwatch.overrideAttrs (old: {
    pname = "${old.pname}-clippy";
    nativeBuildInputs = old.nativeBuildInputs ++ [ clippy ];
    buildPhase = ''
      runHook preBuild
      cargo clippy --all-targets --offline --locked -- -D warnings
      runHook postBuild
    '';
    doCheck = false;
    doInstallCheck = false;
    installPhase = ''
      touch $out
    '';
  });

  rustfmt =
    runCommand "warpwatch-rustfmt"
      {
        nativeBuildInputs = [
          cargo
          rustfmt
        ];
      }
      ''
        export HOME=$TMPDIR
        cd ${warpwatch.src}
        cargo fmt --all -- --check
        touch $out
      '';

  nixfmt =
    runCommand "warpwatch-nixfmt"
      {
        nativeBuildInputs = [ nixfmt ];
        src = lib.fileset.toSource {
          root = ../.;
          fileset = lib.fileset.fileFilter (file: file.hasExt "nix") ../.;
        };
      }
      ''
        find "$src" -name '*.nix' -print0 | xargs -0 nixfmt --check
        touch $out
      '';

  # The files come in through the environment, so the scripts run the same outside Nix
  # (tests/flake/test_checks.py runs them with Debian's promtool and docker-compose).
  stack-promtool =
    runCommand "warpwatch-stack-promtool"
      {
        nativeBuildInputs = [ prometheus.cli ];
        inherit prometheusConfig rules;
        alerts = ../configs/prometheus/alerts.yml;
        alertTests = ../configs/prometheus/alerts.test.yml;
      }
      ''
        cp "$prometheusConfig" prometheus.yml
        cp "$rules" rules.yml
        promtool check config prometheus.yml
        promtool check rules rules.yml
        cp "$alerts" alerts.yml
        cp "$alertTests" alerts.test.yml
        promtool test rules alerts.test.yml
        touch "$out"
      '';

  # amtool (issue 17): the rendered Alertmanager configuration loads, and a page reaches the
  # paging receiver (the default one when none is declared).
  stack-amtool =
    runCommand "warpwatch-stack-amtool"
      {
        nativeBuildInputs = [ prometheus-alertmanager ];
        inherit alertmanagerConfig;
        pagingReceiver =
          if specs.stack.alerts.pagingReceiver != null then
            specs.stack.alerts.pagingReceiver
          else
            configs.alertmanager.defaultReceiver;
      }
      ''
        amtool check-config "$alertmanagerConfig"
        amtool config routes test --config.file="$alertmanagerConfig" \
          --verify.receivers="$pagingReceiver" alertname=TargetDown service=warpwatch severity=page
        touch "$out"
      '';

  # `docker-compose config` needs no daemon; the secrets it references are created by the stack app
  # at run time, so stand-ins are made here.
  stack-compose =
    runCommand "warpwatch-stack-compose"
      {
        nativeBuildInputs = [ docker-compose ];
        inherit compose;
      }
      ''
        export HOME=$TMPDIR
        cp -RL --no-preserve=mode "$compose" project
        mkdir -p project/secrets
        echo stand-in > project/secrets/grafana-admin-password
        echo stand-in > project/secrets/grafana-secret-key
        docker-compose --project-directory project --file project/docker-compose.yml config --quiet
        touch "$out"
      '';

  vm-promtail = vmTest "promtail";
  vm-alloy = vmTest "alloy";
  # Many hosts: the example pair of nix/hosts/, the agent pushing to the server over mutual TLS.
  vm-hosts = testers.runNixOSTest (import ./tests/hosts.nix { module = nixosModule; });
}
