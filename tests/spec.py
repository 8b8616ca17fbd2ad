"""What the issue requires of every deployment, written once for all the Python tests.

This is the specification the renderings are checked against. It is deliberately NOT read from
nix/stack/declaration.nix: a test that took its expected numbers from the declaration would pass
whatever the declaration said.
"""

# The services of the default stack (Promtail as the log shipper), in the declaration's order.
SERVICES = ("warpwatch", "prometheus", "loki", "promtail", "grafana", "alertmanager", "node-exporter")

# Issue 17: Alertmanager's and the node exporter's from measurements (see the declaration).
MEMORY_MIB = {
    "warpwatch": 256,
    "prometheus": 512,
    "loki": 512,
    "promtail": 256,
    "grafana": 512,
    "alertmanager": 256,
    "node-exporter": 64,
}

# Each tool's usual port and health endpoint; Alloy's are its upstream defaults.
PORTS = {
    "warpwatch": 8080,
    "prometheus": 9090,
    "loki": 3100,
    "promtail": 9080,
    "grafana": 3000,
    "alloy": 12345,
    "alertmanager": 9093,
    "node-exporter": 9100,
}
HEALTH_PATHS = {
    "warpwatch": "/healthz",
    "prometheus": "/-/healthy",
    "loki": "/ready",
    "promtail": "/ready",
    "grafana": "/api/health",
    "alloy": "/-/ready",
    "alertmanager": "/-/healthy",
    "node-exporter": "/",
}

# Issue 17: every alert rule's severity is one of these.
SEVERITIES = ("page", "ticket")

HEALTHCHECK_INTERVAL_S = 30
HEALTHCHECK_TIMEOUT_S = 10
HEALTHCHECK_RETRIES = 3

LOG_DRIVER = "json-file"
LOG_FILE_MIB = 10
LOG_FILES = 3

# Loopback unless exposed on purpose; only the service and Grafana get a host port.
LOOPBACK = "127.0.0.1"
PUBLISHED = {"warpwatch", "grafana"}

MIB = 1024 * 1024

# Issue 8, defect 6: every service healthy within one healthcheck interval plus this, after `up`.
TIME_TO_HEALTHY_SLACK_S = 5

# Issue 9, defect 11: Loki's gRPC port, part of the port-clash check.
LOKI_GRPC_PORT = 9095

# Issue 8, defect 3: Grafana provisioning directories that must exist (each logs an error if not).
GRAFANA_PROVISIONING_DIRS = ("datasources", "dashboards", "alerting", "plugins")
