# NixOS VM test of the module with the whole monitoring stack, for one log shipper.
# Wired by the flake as checks.<system>.vm-<shipper> through pkgs.testers.runNixOSTest.
# Every expected number comes from the declaration, like the deployment itself.
{
  module,
  logShipper,
}:
let
  api = import ../stack { overrides = { inherit logShipper; }; };
  inherit (api) stack;
  inherit (stack) services healthcheck;
  unitOf = name: "${api.nixos.unitNames.${name}}.service";
  units = map unitOf stack.activeServiceNames;
  adminPassword = "vm-test-admin-password";
  url = name: "http://127.0.0.1:${toString services.${name}.port}";
  # systemctl shows MemoryMax in bytes.
  memoryMax = builtins.toJSON (
    builtins.listToAttrs (
      map (name: {
        name = unitOf name;
        value = toString services.${name}.memoryBytes;
      }) stack.activeServiceNames
    )
  );
  pyList = names: "[${builtins.concatStringsSep ", " (map (n: "\"${n}\"") names)}]";
  # The alert path, as nixpkgs' own alertmanager test checks it: a webhook receiver on the VM
  # logs every notification; its URL reaches Alertmanager as a credential (url_file).
  hookPort = 8099;
  targetDownFor = 15;
  groupWait = 5;
  # Probes every intervalSeconds, `retries` failures in a row, then the restart: allow two extra
  # rounds and the start period on top.
  restartWithin =
    healthcheck.intervalSeconds * (healthcheck.retries + 2)
    + healthcheck.timeoutSeconds * healthcheck.retries
    + services.warpwatch.startPeriodSeconds;
in
{
  name = "warpwatch-${logShipper}";

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [
        module
        (import ./grafana-secrets.nix { inherit adminPassword; })
      ];
      virtualisation.memorySize = 3072;
      virtualisation.diskSize = 4096;

      # Test secret: a copied file (mode set), so the path is outside the store as required.
      environment.etc."warpwatch-test/webhook-url" = {
        text = "http://127.0.0.1:${toString hookPort}/alerts";
        mode = "0400";
      };

      # The test's webhook receiver: one journal line per notification body.
      systemd.services.alert-logger = {
        wantedBy = [ "multi-user.target" ];
        serviceConfig.DynamicUser = true;
        script = ''
          exec ${pkgs.python3}/bin/python3 -u -c '
          import http.server
          class Hook(http.server.BaseHTTPRequestHandler):
              def do_POST(self):
                  body = self.rfile.read(int(self.headers["Content-Length"]))
                  print("notification " + body.decode(), flush=True)
                  self.send_response(200)
                  self.end_headers()
          http.server.HTTPServer(("127.0.0.1", ${toString hookPort}), Hook).serve_forever()
          '
        '';
      };

      services.warpwatch = {
        enable = true;
        monitoring = {
          enable = true;
          inherit logShipper;
          alerts.receivers.test.webhook.urlFile = "/etc/warpwatch-test/webhook-url";
          overrides.alerts = {
            targetDownForSeconds = targetDownFor;
            groupWaitSeconds = groupWait;
            groupIntervalSeconds = 10;
          };
        };
      };

      environment.systemPackages = [
        pkgs.curl
        pkgs.jq
      ];
    };

  testScript = ''
    import json

    units = ${pyList units}
    jobs = ${pyList stack.activeServiceNames}

    start_all()

    with subtest("every unit of the stack is active, with its healthcheck timer"):
        for unit in units:
            machine.wait_for_unit(unit)
        for job in jobs:
            machine.wait_for_unit("${stack.project}-health-" + job + ".timer")
        machine.wait_for_open_port(${toString services.warpwatch.port})
        machine.wait_for_open_port(${toString services.grafana.port})

    with subtest("MemoryMax of every unit is the declared limit"):
        expected = ${memoryMax}
        for unit, limit in expected.items():
            got = machine.succeed(f"systemctl show -P MemoryMax {unit}").strip()
            assert got == limit, f"{unit}: MemoryMax={got}, declared {limit}"

    with subtest("every unit logs to the default journal, bounded by the declared rotation"):
        for unit in units:
            ns = machine.succeed(f"systemctl show -P LogNamespace {unit}").strip()
            assert ns == "", f"{unit} logs to namespace {ns!r}, not the default journal"
        conf = machine.succeed("cat /etc/systemd/journald.conf")
        assert "SystemMaxFileSize=${toString stack.logging.maxSizeMiB}M" in conf, conf
        # No pipe into grep (SIGPIPE under pipefail) and no "-- No entries --" passing for a match.
        started = machine.succeed(
            "journalctl -u warpwatch.service -q --no-pager --grep='warpwatch .* listening on'"
        )
        assert "listening on http://" in started, started

    with subtest("Prometheus scrapes every job (up == 1)"):
        machine.wait_until_succeeds(
            "curl -sf '${url "prometheus"}/api/v1/query?query=up' | "
            + "jq -e '[.data.result[] | select(.value[1] == \"1\") | .metric.job] | sort == "
            + json.dumps(sorted(jobs)).replace("'", "") + "'",
            timeout=180,
        )

    with subtest("a request to warpwatch shows up in http_requests_total"):
        machine.succeed("curl -sf -H 'Accept: application/json' ${url "warpwatch"}/")
        machine.wait_until_succeeds(
            "curl -sf -G '${url "prometheus"}/api/v1/query' "
            + "--data-urlencode 'query=http_requests_total{job=\"warpwatch\",path=\"/\",method=\"GET\"} > 0' "
            + "| jq -e '.data.result | length > 0'",
            timeout=120,
        )

    with subtest("warpwatch's log lines reach Loki through ${logShipper}"):
        machine.wait_until_succeeds(
            "curl -sf -G '${url "loki"}/loki/api/v1/query_range' "
            + "--data-urlencode 'query={unit=\"warpwatch.service\"}' --data-urlencode 'limit=10' "
            + "| jq -e '[.data.result[].values[]] | length > 0'",
            timeout=180,
        )

    with subtest("the shipper's own lines carry service=\"${logShipper}\", as in compose"):
        machine.wait_until_succeeds(
            "curl -sf -G '${url "loki"}/loki/api/v1/query_range' "
            + "--data-urlencode 'query={service=\"${logShipper}\"}' --data-urlencode 'limit=10' "
            + "| jq -e '[.data.result[].values[]] | length > 0'",
            timeout=180,
        )

    with subtest("Prometheus reloads its configuration in the same process"):
        pid = machine.succeed("systemctl show -P MainPID prometheus.service").strip()
        machine.succeed("systemctl reload prometheus.service")
        after = machine.succeed("systemctl show -P MainPID prometheus.service").strip()
        assert after == pid, f"prometheus.service restarted (MainPID {pid} -> {after}) instead of reloading"

    with subtest("Grafana is healthy and lists both provisioned datasources"):
        machine.wait_until_succeeds("curl -sf ${url "grafana"}/api/health | jq -e '.database == \"ok\"'", timeout=120)
        machine.succeed(
            "curl -sf -u 'admin:${adminPassword}' ${url "grafana"}/api/datasources "
            + "| jq -e '[.[].uid] | sort == [\"loki\", \"prometheus\"]'"
        )

    with subtest("a stopped warpwatch pages the webhook receiver, then resolves"):
        machine.wait_for_open_port(${toString hookPort})
        machine.succeed("curl -sf ${url "alertmanager"}/-/healthy")
        machine.succeed("curl -sf ${url "node-exporter"}/metrics > /dev/null")
        machine.systemctl("stop warpwatch.service")
        firing = '"status":"firing".*"alertname":"TargetDown".*"service":"warpwatch"'
        # for + evaluation interval + group_wait + 15 s, and one scrape interval to notice.
        machine.wait_until_succeeds(
            f"journalctl -u alert-logger.service -q --no-pager --grep='{firing}'",
            timeout=${
              toString (targetDownFor + 2 * stack.prometheus.evaluationIntervalSeconds + groupWait + 15)
            },
        )
        machine.succeed(
            "curl -sf ${url "alertmanager"}/metrics "
            + "| jq -R -s -e 'split(\"\\n\") | map(select(startswith(\"alertmanager_notifications_total{integration=\\\"webhook\\\"}\"))) "
            + "| map(split(\" \")[1] | tonumber) | add > 0'"
        )
        machine.systemctl("start warpwatch.service")
        resolved = '"status":"resolved".*"alertname":"TargetDown".*"service":"warpwatch"'
        machine.wait_until_succeeds(
            f"journalctl -u alert-logger.service -q --no-pager --grep='{resolved}'", timeout=120
        )

    def visits():
        return json.loads(machine.succeed("curl -sf ${url "warpwatch"}/visits"))["visits"]

    with subtest("an unhealthy warpwatch is restarted by its healthcheck"):
        for _ in range(3):
            machine.succeed("curl -sf ${url "warpwatch"}/ > /dev/null")
        before_visits = visits()
        machine.sleep(2)  # the flusher persists about once a second
        invocation = machine.succeed("systemctl show -P InvocationID warpwatch.service").strip()
        # Frozen, not dead: systemd itself sees nothing wrong, only the probe can tell.
        machine.succeed("systemctl kill --signal=SIGSTOP warpwatch.service")
        machine.wait_until_succeeds(
            f"test \"$(systemctl show -P InvocationID warpwatch.service)\" != {invocation}",
            timeout=${toString restartWithin},
        )
        machine.wait_for_unit("warpwatch.service")
        unhealthy = "unhealthy after ${toString healthcheck.retries} consecutive failed probes"
        logged = machine.succeed(
            f"journalctl -u ${stack.project}-health-warpwatch.service -q --no-pager --priority=err --grep='{unhealthy}'"
        )
        assert unhealthy in logged, logged
        machine.wait_for_open_port(${toString services.warpwatch.port})
        assert visits() >= before_visits, "visits lost across the healthcheck restart"

    with subtest("visits survive a restart of the service"):
        machine.succeed("curl -sf ${url "warpwatch"}/ > /dev/null")
        before_visits = visits()
        machine.systemctl("restart warpwatch.service")
        machine.wait_for_open_port(${toString services.warpwatch.port})
        assert visits() == before_visits, f"visits {visits()} != {before_visits} after restart"
  '';
}
