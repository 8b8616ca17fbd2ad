"""Overrides: a user changes one value without copying the rest; a bad value fails evaluation
with a message that names the field."""

import pytest

from tests import spec
from tests.conftest import nix_eval, nix_eval_error

PROJECT = "(import ./nix/stack {{ overrides = {}; }}).compose.project"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ("{ services.loki.memoryMiB = -5; }", "services.loki.memoryMiB must be a positive integer (got -5)"),
        ("{ services.grafana.memoryMiB = 0; }", "services.grafana.memoryMiB must be a positive integer (got 0)"),
        ('{ services.loki.memoryMiB = "512"; }', 'services.loki.memoryMiB must be an integer (got "512")'),
        ('{ services.lokki.port = 3101; }', 'unknown service "lokki" in overrides.services (known: alertmanager, alloy, collector, grafana'),
        ("{ services.grafana.port = 9090; }", "port clash: services.grafana.port and services.prometheus.port are both 9090"),
        # Issue 9, defect 11: Loki's gRPC port is a listener too.
        (
            f"{{ services.warpwatch.port = {spec.LOKI_GRPC_PORT}; }}",
            f"port clash: services.loki.grpcPort and services.warpwatch.port are both {spec.LOKI_GRPC_PORT}",
        ),
        (
            f"{{ services.loki.grpcPort = {spec.PORTS['loki']}; }}",
            f"port clash: services.loki.grpcPort and services.loki.port are both {spec.PORTS['loki']}",
        ),
        ("{ services.loki.grpcPort = 0; }", "services.loki.grpcPort must be a port number between 1 and 65535 (got 0)"),
        ("{ services.warpwatch.port = 70000; }", "services.warpwatch.port must be a port number between 1 and 65535 (got 70000)"),
        ("{ services.loki.memoryMb = 1; }", "unknown field services.loki.memoryMb in overrides"),
        ("{ retention = 1; }", "unknown field retention in overrides (known at top level:"),
        ('{ logShipper = "fluent-bit"; }', 'logShipper must be "promtail" or "alloy" (got "fluent-bit")'),
        ("{ logging.maxFiles = -1; }", "logging.maxFiles must be a positive integer (got -1)"),
        ("{ healthcheck.timeoutSeconds = 60; }", "healthcheck.timeoutSeconds (60) must not exceed healthcheck.intervalSeconds (30)"),
        ('{ services.loki.healthPath = "ready"; }', 'services.loki.healthPath must be an absolute path starting with / (got "ready")'),
        ('{ prometheus.retention = "two weeks"; }', 'prometheus.retention must be a Prometheus duration such as "15d"'),
        ('{ services.grafana.dependsOn = [ "alloy" ]; }', 'services.grafana.dependsOn names "alloy", which is not running'),
        ("{ services.loki = 512; }", "services.loki must be an attribute set (got 512)"),
        ("[ ]", "overrides must be an attribute set"),
        (
            '{ services.loki.healthcheckTest = [ "wget" "http://127.0.0.1:3100/ready" ]; }',
            'services.loki.healthcheckTest must be [ ] (the built-in probe) or a list of strings starting with "CMD"',
        ),
        ('{ services.loki.healthcheckTest = "wget"; }', 'services.loki.healthcheckTest must be a list (got "wget")'),
    ],
)
def test_bad_override_fails_naming_the_field(overrides, message):
    err = nix_eval_error(PROJECT.format(overrides))
    assert f"warpwatch stack: {message}" in err, err


def test_port_clash_with_the_alternative_shipper_only_counts_when_it_runs():
    # alloy is not running with the default shipper, so its port may equal an active one...
    nix_eval(PROJECT.format("{ services.alloy.port = 3100; }"))
    # ...but not once it is selected.
    err = nix_eval_error(PROJECT.format('{ logShipper = "alloy"; services.alloy.port = 3100; }'))
    assert "port clash: services.alloy.port and services.loki.port are both 3100" in err


def test_override_merges_deeply_and_keeps_everything_else():
    base = nix_eval("(import ./nix/stack { }).stack")
    changed = nix_eval('(import ./nix/stack { overrides = { services.loki.image.tag = "3.7.9"; }; }).stack')
    assert changed["services"]["loki"]["image"] == {"name": base["services"]["loki"]["image"]["name"], "tag": "3.7.9"}
    changed["services"]["loki"]["image"]["tag"] = base["services"]["loki"]["image"]["tag"]
    assert changed == base
