# Two-node NixOS VM test of many hosts (issue 18), in the manner of nixpkgs' multi-node Prometheus
# tests: the example pair of nix/hosts/ (monitor, the server with the receiver; app1, an agent).
# The certificates are made inside the test at run time with openssl, so no key enters the store.
# Wired by the flake as checks.<system>.vm-hosts through pkgs.testers.runNixOSTest. Every expected
# number comes from the declaration, like the deployment itself.
{ module }:
let
  # HostSilent sooner than the declared 300 s, so the test waits minutes, not a quarter hour.
  silentFor = 60;
  testOverrides.hosts.silentForSeconds = silentFor;

  # The two stacks as the hosts declare them (for unit names and ports; the TLS paths are those
  # of nix/hosts/).
  tls = "/etc/warpwatch/tls";
  keys = "/run/keys/warpwatch";
  server = import ../stack {
    overrides = testOverrides // {
      hosts = testOverrides.hosts // {
        name = "monitor";
        expected = [ "app1" ];
      };
      receiver = {
        enable = true;
        certFile = "${tls}/server.crt";
        keyFile = "${keys}/server.key";
        clientCaFile = "${tls}/ca.crt";
      };
    };
  };
  agent = import ../stack {
    overrides = {
      role = "agent";
      hosts.name = "app1";
      agent = {
        serverAddress = "monitor:${toString server.stack.receiver.port}";
        certFile = "${tls}/client.crt";
        keyFile = "${keys}/client.key";
        caFile = "${tls}/ca.crt";
      };
    };
  };
  inherit (server.stack) services receiver prometheus;
  unitOf = api: name: "${api.nixos.unitNames.${name}}.service";
  pyList = names: "[${builtins.concatStringsSep ", " (map (n: "\"${n}\"") names)}]";
  serverUnits = map (unitOf server) server.stack.activeServiceNames;
  agentUnits = map (unitOf agent) agent.stack.activeServiceNames;
  url = name: "http://127.0.0.1:${toString services.${name}.port}";
  receiverUrl = "https://monitor:${toString receiver.port}";
  # HostSilent: absent for silentFor, then held a few scrape intervals (nix/stack/render/rules.nix);
  # two evaluation intervals and a minute of margin on top.
  silentWithin =
    silentFor + 4 * prometheus.scrapeIntervalSeconds + 2 * prometheus.evaluationIntervalSeconds + 60;
in
{
  name = "warpwatch-hosts";

  nodes.monitor =
    { pkgs, ... }:
    {
      imports = [
        module
        ../hosts/monitor.nix
        (import ./grafana-secrets.nix { adminPassword = "vm-test-admin-password"; })
      ];
      virtualisation.memorySize = 3072;
      virtualisation.diskSize = 4096;
      services.warpwatch.monitoring.overrides = testOverrides;
      environment.systemPackages = [
        pkgs.curl
        pkgs.jq
        pkgs.openssl
      ];
    };

  nodes.app1 =
    { lib, pkgs, ... }:
    {
      imports = [
        module
        ../hosts/app1.nix
      ];
      virtualisation.memorySize = 1536;
      # The test network's name of the server.
      services.warpwatch.monitoring.agent.serverAddress = lib.mkForce agent.stack.agent.serverAddress;
      environment.systemPackages = [
        pkgs.curl
        pkgs.jq
        pkgs.iproute2
      ];
    };

  testScript = ''
    server_units = ${pyList serverUnits}
    agent_units = ${pyList agentUnits}

    def put(machine, path, text, mode):
        """Write a file the test made at run time (never a store path)."""
        machine.succeed(
            f"install -d -m 0755 $(dirname {path}) && umask 077 && cat > {path} <<'PEM'\n{text}PEM\n"
            + f"chmod {mode} {path}"
        )

    def openssl(args):
        monitor.succeed("cd /root/pki && openssl " + args)

    def query(expr):
        return (
            "curl -sf -G '${url "prometheus"}/api/v1/query' "
            + f"--data-urlencode 'query={expr}'"
        )

    start_all()

    with subtest("both hosts boot; the server's stack is up"):
        for unit in ["prometheus.service", "loki.service", "grafana.service"]:
            monitor.wait_for_unit(unit)
        app1.wait_for_unit("warpwatch.service")
        app1.wait_for_unit("prometheus-node-exporter.service")

    with subtest("certificates are made at run time with openssl, outside the store"):
        monitor.succeed("install -d -m 0700 /root/pki")
        ec = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
        for ca in ["ca", "stranger-ca"]:
            openssl(
                f"req -x509 {ec} -days 2 -subj /CN={ca} -keyout {ca}.key -out {ca}.crt "
                + "-addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign"
            )
        for name, ca, extra in [
            ("server", "ca", "-addext subjectAltName=DNS:monitor"),
            ("app1", "ca", ""),
            ("stranger", "stranger-ca", ""),
        ]:
            openssl(f"req {ec} -subj /CN={name} {extra} -keyout {name}.key -out {name}.csr")
            openssl(
                f"x509 -req -in {name}.csr -CA {ca}.crt -CAkey {ca}.key -CAcreateserial -days 2 "
                + f"-copy_extensions copy -out {name}.crt"
            )

        def pem(name):
            return monitor.succeed(f"cat /root/pki/{name}")

        put(monitor, "${tls}/ca.crt", pem("ca.crt"), "0644")
        put(monitor, "${tls}/server.crt", pem("server.crt"), "0644")
        put(monitor, "${keys}/server.key", pem("server.key"), "0400")
        put(app1, "${tls}/ca.crt", pem("ca.crt"), "0644")
        put(app1, "${tls}/client.crt", pem("app1.crt"), "0644")
        put(app1, "${keys}/client.key", pem("app1.key"), "0400")
        for name in ["stranger.crt", "stranger.key"]:
            put(app1, f"/root/{name}", pem(name), "0400")
        # The units that read them as credentials failed at boot without them: start them now.
        monitor.succeed("systemctl reset-failed; systemctl restart ${unitOf server "receiver"}")
        app1.succeed(
            "systemctl reset-failed; systemctl restart "
            + " ".join(u for u in agent_units if u not in ["warpwatch.service", "prometheus-node-exporter.service"])
        )
        monitor.wait_for_unit("${unitOf server "receiver"}")
        monitor.wait_for_open_port(${toString receiver.port})
        for unit in agent_units:
            app1.wait_for_unit(unit)
        for unit in server_units:
            monitor.wait_for_unit(unit)

    with subtest("nothing on the agent listens beyond loopback"):
        listening = [line.split()[3] for line in app1.succeed("ss -Htln").splitlines()]
        exposed = [a for a in listening if not (a.startswith("127.") or a.startswith("[::1]:"))]
        assert listening and exposed == [], f"app1 listens beyond loopback: {exposed}"

    with subtest("the agent's series reach the server labelled host=app1, next to the server's own"):
        monitor.wait_until_succeeds(
            query('up{host="app1"} == 1')
            + " | jq -e '[.data.result[].metric.job] | sort == [\"node-exporter\", \"warpwatch\"]'",
            timeout=180,
        )
        monitor.succeed(query('up{host="monitor",job="warpwatch"} == 1') + " | jq -e '.data.result | length == 1'")

    with subtest("the agent's journal reaches the server's Loki labelled host=app1"):
        monitor.wait_until_succeeds(
            "curl -sf -G '${url "loki"}/loki/api/v1/query_range' "
            + "--data-urlencode 'query={host=\"app1\",unit=\"warpwatch.service\"}' --data-urlencode 'limit=10' "
            + "| jq -e '[.data.result[].values[]] | length > 0'",
            timeout=180,
        )

    def status(args):
        return app1.succeed(
            "curl -s -o /dev/null -w '%{http_code}' --max-time 10 --cacert ${tls}/ca.crt " + args
        ).strip()

    with subtest("the receiver refuses strangers and admits only the two write paths"):
        write = "-X POST --data-binary x ${receiverUrl}/api/v1/write"
        assert status(write) == "400", "a client without a certificate was not refused"
        assert status(f"--cert /root/stranger.crt --key /root/stranger.key {write}") == "400", (
            "a certificate of another CA was not refused"
        )
        client = "--cert ${tls}/client.crt --key ${keys}/client.key "
        assert status(client + "${receiverUrl}/api/v1/query?query=up") == "404"
        assert status(client + "${receiverUrl}/api/v1/write") == "403", "GET on the write path was admitted"
        # Its health listener is the server's alone.
        monitor.succeed("curl -sf http://127.0.0.1:${toString services.receiver.port}${services.receiver.healthPath}")
        app1.fail("curl -sf --max-time 5 http://monitor:${toString services.receiver.port}${services.receiver.healthPath}")

    with subtest("HostSilent fires when the agent's collector stops, and resolves when it is back"):
        silent = (
            "curl -sf '${url "prometheus"}/api/v1/alerts' | jq -e '[.data.alerts[] | select("
            + ".labels.alertname == \"HostSilent\" and .labels.host == \"app1\" and .state == \"firing\")] | length"
        )
        monitor.succeed(silent + " == 0'")
        app1.systemctl("stop ${unitOf agent "collector"}")
        monitor.wait_until_succeeds(silent + " == 1'", timeout=${toString silentWithin})
        app1.systemctl("start ${unitOf agent "collector"}")
        monitor.wait_until_succeeds(silent + " == 0'", timeout=180)
  '';
}
