# A stand-in for the flake's nixpkgs inputs, just large enough for flake.nix's `outputs` to
# evaluate offline under Debian's nix-instantiate. Builders return their arguments, marked as
# derivations with a recognisable store path, so the tests can see what the flake passed to them.
# `tag` tells the two inputs apart ("26.05" for nixpkgs, "25.11" for nixpkgs-promtail).
tag:
let
  drv =
    name: attrs:
    attrs
    // {
      type = "derivation";
      inherit name;
      outPath = "/nix/store/00000000000000000000000000000000-${name}";
    };

  pkg =
    name: version:
    drv "${name}-${version}-from-${tag}" {
      pname = name;
      inherit version;
      meta.mainProgram = name;
    };

  lib = {
    inherit (import ../../nix/stack/lib.nix) genAttrs;
    inherit (builtins) mapAttrs;
    optionalAttrs = condition: set: if condition then set else { };
    getExe = d: "${d}/bin/${d.meta.mainProgram}";
    concatMapStringsSep =
      sep: f: list:
      builtins.concatStringsSep sep (map f list);
    importTOML = file: builtins.fromTOML (builtins.readFile file);
    licenses.mit = "mit";
    platforms = {
      linux = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      darwin = [
        "x86_64-darwin"
        "aarch64-darwin"
      ];
    };
    fileset = {
      toSource = args: drv "source" { inherit (args) root; };
      unions = list: list;
      fileFilter = _: dir: dir;
    };
    nixosSystem = args: { nixosSystemArgs = args; };
    # As nixpkgs' lib.modules.importApply: the file's function applied, the file as its location.
    modules.importApply = file: arg: {
      _file = file;
      imports = [ (import file arg) ];
    };
  };

  pkgsFor =
    system:
    let
      pkgs = {
        inherit lib;
        stdenv.hostPlatform = {
          inherit system;
          isLinux = builtins.match ".*-linux" system != null;
        };
        callPackage =
          file: args:
          let
            f = import file;
          in
          f (builtins.intersectAttrs (builtins.functionArgs f) pkgs // args);

        rustPlatform.buildRustPackage =
          args:
          let
            self = drv "${args.pname}-${args.version}" (
              args
              // {
                nativeBuildInputs = [ ];
                overrideAttrs = f: drv "overridden" (args // f self);
              }
            );
          in
          self;

        prometheus = pkg "prometheus" "3.14.0" // {
          cli = pkg "prometheus-cli" "3.14.0";
        };
        grafana = pkg "grafana" "12.4.0";
        grafana-loki = pkg "grafana-loki" "3.7.8";
        grafana-alloy = pkg "grafana-alloy" "1.12.1";
        promtail = pkg "promtail" "3.6.11";
        prometheus-alertmanager = pkg "alertmanager" "0.28.1";
        prometheus-node-exporter = pkg "node_exporter" "1.9.1";
        nginx = pkg "nginx" "1.28.0";
        util-linux = pkg "util-linux" "2.41.2";

        dockerTools = {
          streamLayeredImage = args: drv "stream-${baseNameOf args.name}" { imageArgs = args; };
          caCertificates = pkg "ca-certificates" "1";
        };
        fakeNss.override = args: drv "fake-nss" args;
        linkFarm = name: entries: drv name { inherit entries; };
        writeText = name: text: drv name { inherit text; };
        writeShellApplication =
          args:
          drv args.name (
            args
            // {
              meta = (args.meta or { }) // {
                mainProgram = args.name;
              };
            }
          );
        runCommand =
          name: env: script:
          drv name (env // { inherit script; });
        testers.runNixOSTest = module: drv "nixos-test" { inherit module; };
        mkShell = args: drv "shell" args;
        python3.withPackages =
          f:
          drv "python3-env" {
            modules = f {
              pytest = "pytest";
              pyyaml = "pyyaml";
            };
          };
      }
      // lib.genAttrs [
        "acl"
        "cargo"
        "clippy"
        "coreutils"
        "docker-client"
        "docker-compose"
        "gnugrep"
        "jq"
        "nix"
        "nixfmt"
        "nixfmt-tree"
        "rustc"
        "rustfmt"
        "shellcheck"
        "systemd"
        "util-linux"
        "wrk"
        "yamllint"
      ] (name: pkg name "1");
    in
    pkgs;
in
{
  inherit lib;
  legacyPackages = lib.genAttrs [
    "x86_64-linux"
    "aarch64-linux"
    "x86_64-darwin"
    "aarch64-darwin"
  ] pkgsFor;
}
