{
  description = "warpwatch: a Rust (warp) service and its Prometheus, Loki, Promtail/Alloy and Grafana stack, declared once";

  inputs = {
    nixpkgs.url = "github:NixOS/nixpkgs/nixos-26.05";
    # Promtail alone comes from here: nixos-26.05 removed it (end of life upstream), nixos-25.11 is
    # the last branch that ships it. Nothing else of this input is used.
    nixpkgs-promtail.url = "github:nixos/nixpkgs/nixos-25.11";
  };

  outputs =
    {
      self,
      nixpkgs,
      nixpkgs-promtail,
    }:
    let
      inherit (nixpkgs) lib;

      linuxSystems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      # The service builds on macOS too; images, the stack and the NixOS parts are Linux-only.
      allSystems = linuxSystems ++ [
        "x86_64-darwin"
        "aarch64-darwin"
      ];
      forSystems = systems: f: lib.genAttrs systems (system: f perSystem.${system});

      # The stack declaration without overrides (ports for `nix run`).
      declared = import ./nix/stack { };

      # Evaluated once per system and shared by every output below.
      perSystem = lib.genAttrs allSystems (
        system:
        let
          pkgs = nixpkgs.legacyPackages.${system};
          warpwatch = pkgs.callPackage ./nix/package.nix { };

          # The packages the images run; the keys are the declaration's service names.
          servicePackages = {
            inherit warpwatch;
            inherit (pkgs) prometheus grafana;
            loki = pkgs.grafana-loki;
            alloy = pkgs.grafana-alloy;
            promtail = nixpkgs-promtail.legacyPackages.${system}.promtail;
            alertmanager = pkgs.prometheus-alertmanager;
            node-exporter = pkgs.prometheus-node-exporter;
            # The receiver of agents' pushes (mutual TLS); the collector runs the prometheus image.
            receiver = pkgs.nginx;
          };

          packageSpecs = lib.mapAttrs (_: package: {
            inherit (package) version;
            path = "${package}";
          }) servicePackages;
          specs = import ./nix/stack/image-specs.nix { packages = packageSpecs; };
          # The agent's project, with what `nix run .#agent -- up` fills in left as placeholders.
          agentSpecs = import ./nix/stack/image-specs.nix {
            packages = packageSpecs;
            role = "agent";
          };

          images = import ./nix/images.nix {
            inherit (pkgs) lib dockerTools fakeNss;
            inherit specs servicePackages;
          };

          stackAppFor =
            appSpecs:
            import ./nix/stack-app.nix {
              inherit (pkgs)
                lib
                acl
                coreutils
                docker-client
                docker-compose
                gnugrep
                linkFarm
                util-linux
                writeShellApplication
                writeText
                ;
              inherit images;
              specs = appSpecs;
            };
          stackApp = stackAppFor specs;
          agentApp = stackAppFor agentSpecs;

          runApp = import ./nix/run-app.nix {
            inherit (pkgs) coreutils writeShellApplication;
            inherit warpwatch;
            inherit (declared) stack;
          };
        in
        {
          inherit
            pkgs
            warpwatch
            servicePackages
            specs
            images
            stackApp
            agentApp
            runApp
            ;
        }
      );
    in
    {
      packages = forSystems allSystems (
        s:
        {
          default = s.warpwatch;
          inherit (s) warpwatch;
        }
        // lib.optionalAttrs s.pkgs.stdenv.hostPlatform.isLinux {
          inherit (s.servicePackages) promtail;
          image = s.images.warpwatch;
          image-prometheus = s.images.prometheus;
          image-loki = s.images.loki;
          image-promtail = s.images.promtail;
          image-alloy = s.images.alloy;
          image-grafana = s.images.grafana;
          image-alertmanager = s.images.alertmanager;
          image-node-exporter = s.images.node-exporter;
          image-receiver = s.images.receiver;
          inherit (s.stackApp) compose;
          stack = s.stackApp.stack-app;
          agent = s.agentApp.stack-app;
        }
      );

      apps = forSystems allSystems (
        s:
        {
          default = {
            type = "app";
            program = lib.getExe s.runApp;
            meta.description = "warpwatch on http://127.0.0.1:${toString declared.stack.services.warpwatch.port}, data in the per-user state directory";
          };
        }
        // lib.optionalAttrs s.pkgs.stdenv.hostPlatform.isLinux {
          stack = {
            type = "app";
            program = lib.getExe s.stackApp.stack-app;
            meta.description = "The compose stack on the local Docker daemon: up, down, ps, logs";
          };
          agent = {
            type = "app";
            program = lib.getExe s.agentApp.stack-app;
            meta.description = "An agent stack for another Docker host: up --server HOST:PORT --tls-dir DIR [--host NAME], down, ps, logs";
          };
        }
      );

      checks = forSystems linuxSystems (
        s:
        import ./nix/checks.nix {
          inherit (s.pkgs)
            lib
            runCommand
            cargo
            clippy
            docker-compose
            nixfmt
            prometheus
            prometheus-alertmanager
            rustfmt
            testers
            writeText
            ;
          inherit (s) warpwatch specs;
          inherit (s.stackApp) compose;
          nixosModule = self.nixosModules.default;
        }
      );

      devShells = forSystems linuxSystems (s: {
        default = s.pkgs.mkShell {
          inputsFrom = [ s.warpwatch ];
          packages = with s.pkgs; [
            cargo
            rustc
            clippy
            rustfmt
            prometheus
            prometheus.cli
            # amtool, and Alertmanager and the node exporter for the tests of issue 17
            prometheus-alertmanager
            prometheus-node-exporter
            docker-compose
            docker-client
            yamllint
            shellcheck
            acl
            systemd
            jq
            nix
            nixfmt
            # bench/run.sh
            wrk
            util-linux
            (python3.withPackages (ps: [
              ps.pytest
              ps.pyyaml
            ]))
          ];
        };
      });

      # `nix fmt`: nixfmt over the whole tree (bare nixfmt would wait on stdin without arguments).
      formatter = forSystems allSystems (s: s.pkgs.nixfmt-tree);

      overlays.default = final: _prev: {
        warpwatch = final.callPackage ./nix/package.nix { };
      };

      # The module of nix/module.nix with the packages of this flake as option defaults.
      nixosModules.default = lib.modules.importApply ./nix/module.nix { inherit (self) packages; };

      nixosConfigurations =
        let
          host =
            modules:
            nixpkgs.lib.nixosSystem {
              system = "x86_64-linux";
              modules = [ self.nixosModules.default ] ++ modules;
            };
        in
        {
          example = host [ ./nix/hosts/example.nix ];
          # Many hosts (README "Many hosts"): the monitoring server and one agent pushing to it.
          monitor = host [
            ./nix/hosts/placeholder-hardware.nix
            ./nix/hosts/monitor.nix
          ];
          app1 = host [
            ./nix/hosts/placeholder-hardware.nix
            ./nix/hosts/app1.nix
          ];
        };
    };
}
