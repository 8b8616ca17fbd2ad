"""The Promtail stand-in of the two-hosts test (tests/hosts/shipper.py) reads the pipeline the
stack renders for an agent as Promtail does: these lines, in dockerd's json-file records, get
the labels and line Promtail gives them, and what it does not implement is refused by name."""

import json
import subprocess
import sys

import yaml

from tests.hosts import shipper
from tests.hosts.helpers import agent_overrides, render_yaml_text

AGENT = agent_overrides("app1", "monitor.example.org:8443")


def rendered(target: str) -> dict:
    return yaml.safe_load(render_yaml_text("promtail", AGENT, f'target = "{target}";'))


def record(log: str, tag: str, time: str = "2026-01-02T03:04:05.123456789Z") -> str:
    return json.dumps({"log": log, "stream": "stderr", "attrs": {"tag": tag}, "time": time})


def test_the_rendered_pipeline_labels_levels_and_drops_as_promtail_does():
    (job,) = rendered("compose")["scrape_configs"]
    target = shipper.Target(job)
    assert target.labels == {"job": "containers"}

    def ship(line: str, tag: str = "warpwatch/warpwatch"):
        entry = target.run(shipper.Entry({**target.labels, "filename": "/c/x/x-json.log"}, record(line, tag), 0))
        return entry and (entry.labels, entry.line, entry.ts_ns)

    labels = {"job": "containers", "service": "warpwatch", "stream": "stderr"}
    assert ship(" WARN  warpwatch::server > slow request\n") == (
        {**labels, "level": "warn"},
        " WARN  warpwatch::server > slow request",
        1767323045123456789,
    )
    assert ship("DEBUG warpwatch::access > GET / 200\r\n")[:2] == ({**labels, "level": "debug"}, "DEBUG warpwatch::access > GET / 200")
    assert ship("ts=x level=WARNING msg=y\n", "warpwatch/loki")[0]["level"] == "warn"
    assert ship("ts=x level=info msg=y\n", "warpwatch/loki")[0] == {**labels, "service": "loki", "level": "info"}
    # No level in the line: no level label (the template stage has no value to work on).
    assert "level" not in ship("plain words\n")[0]
    # Another project's container: not ours to ship.
    assert ship("ts=x level=info\n", "other/web") is None


def test_what_the_stand_in_does_not_implement_is_refused_by_name(tmp_path):
    # The host target reads the journal, which the stand-in cannot.
    config = tmp_path / "promtail.yml"
    config.write_text(yaml.safe_dump(rendered("host")))
    proc = subprocess.run([sys.executable, shipper.__file__, str(config)], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 2
    assert "scrape config keys ['journal', 'relabel_configs'] in job 'journal-0'" in proc.stderr, proc.stderr


def test_the_go_template_subset_and_durations():
    nodes = shipper.parse_template('{{ if eq (ToLower .Value) "warning" }}warn{{ else }}{{ ToUpper .Value }}{{ end }}!')
    assert [shipper.render_template(nodes, {"Value": v}) for v in ("WARNING", "info")] == ["warn!", "INFO!"]
    for template, what in (("{{ Replace .Value }}", "template function 'Replace'"), ("{{ if .Value }}x", "unterminated if")):
        try:
            shipper.parse_template(template) and shipper.render_template(shipper.parse_template(template), {"Value": "a"})
        except shipper.Unsupported as error:
            assert what in str(error)
        else:
            raise AssertionError(f"{template} was accepted")
    assert [shipper.seconds(d) for d in ("500ms", "10s", "5m")] == [0.5, 10, 300]
