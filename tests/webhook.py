"""The tests' own Alertmanager webhook receiver (issue 17): Debian's static busybox serving a CGI
that stores every notification body as a file, or answers 503 while a `refuse` file exists, in one
data directory. Run in a container of the compose project (tests/live) or as a unit of the systemd
machine (tests/systemd); the test reads the files back."""

import json
import time
from pathlib import Path

from tests.conftest import wait_for

CGI_PATH = "/cgi-bin/hook"


def cgi(data_dir: str) -> str:
    """The CGI script (busybox httpd runs it for CGI_PATH under its home directory)."""
    return f"""#!/bin/sh
# Alertmanager's webhook as a busybox httpd CGI: each notification body becomes a file.
if [ -e {data_dir}/refuse ]; then
  head -c "${{CONTENT_LENGTH:-0}}" >/dev/null
  printf 'Status: 503 Service Unavailable\\r\\nContent-Type: text/plain\\r\\n\\r\\nrefusing\\n'
  exit 0
fi
t=$(mktemp {data_dir}/.in.XXXXXX)
head -c "${{CONTENT_LENGTH:-0}}" >"$t"
chmod 0644 "$t"
mv "$t" "{data_dir}/hook.${{t##*.}}.json"
printf 'Status: 200 OK\\r\\nContent-Type: text/plain\\r\\n\\r\\nstored\\n'
"""


class Notifications:
    """The receiver's notifications, each with the time this test first saw it. `read` lists the
    stored files' texts by name (a local directory, or a container's, read some other way)."""

    def __init__(self, read):
        self.read = read
        self.seen: dict[str, tuple[float, dict]] = {}

    @classmethod
    def in_directory(cls, data: Path) -> "Notifications":
        return cls(lambda: {p.name: p.read_text() for p in sorted(data.glob("hook.*.json"))})

    def poll(self) -> list[tuple[float, dict]]:
        for name, text in self.read().items():
            if name not in self.seen:
                self.seen[name] = (time.monotonic(), json.loads(text))
        return sorted(self.seen.values(), key=lambda entry: entry[0])

    def wait(self, what: str, alertname: str, status: str, after: float, deadline: float, **labels) -> tuple[float, dict]:
        """The first notification seen after `after` (monotonic) carrying `alertname` with `status`
        and these labels; a test failure after `deadline` seconds."""

        def found():
            for seen, body in self.poll():
                if seen < after:
                    continue
                for alert in body["alerts"]:
                    got = alert["labels"]
                    if got.get("alertname") == alertname and alert["status"] == status and all(
                        got.get(k) == v for k, v in labels.items()
                    ):
                        return seen, body
            return None

        return wait_for(what, found, deadline=deadline, interval=0.2)
