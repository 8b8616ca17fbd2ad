"""A stand-in for Promtail on the agent, for the two-hosts test (tests/hosts/test_two_hosts.py).

No Promtail binary exists in CI; the real Promtail 3.6 was run against this configuration
privately. This program follows the contract of the configuration the stack renders for
`role = "agent"` (`configs.promtail`), read from the YAML file given as its only argument, and
refuses, naming it, anything in that file it does not implement, so a change of the rendering
fails the test instead of being shipped differently:

- `clients[0]`: `url`, `tls_config` (cert_file, key_file, ca_file: mutual TLS),
  `external_labels` (added to every stream), `backoff_config` (min_period, max_period,
  max_retries: a failed push is retried after min_period, doubling up to max_period, then its
  batch is dropped as Promtail drops it), `batchwait` and `batchsize` (Promtail's defaults, 1s and
  1 MiB, where unset). A push answered 429 or 5xx, or not answered, is retried; another 4xx
  drops the batch (Promtail's rule: the server will never take it).
- `positions.filename`: byte offsets per file in Promtail's format (`positions: {path: "n"}`),
  read at start. Stricter than Promtail, which records what it has read: an offset moves only
  once the server has acknowledged the lines before it, so what the server did not acknowledge
  is sent again, after a retry or a restart (at least once; a push the server recorded but whose
  answer was lost is sent twice).
- `scrape_configs`: static file targets (`__path__` a glob of dockerd json-file logs, the
  compose target's rendering; the host target reads the journal, which this stand-in cannot),
  their other labels as stream labels plus `filename`, and the pipeline stages `json` (dotted
  JMESPath), `regex`, `labels`, `match` (LogQL `=`/`!=` selector, action `drop`), `labeldrop`,
  `timestamp` (RFC3339Nano/RFC3339), `template` (the Go-template subset the rendering uses:
  `.Value`, string literals, `if`/`else`/`end`, `eq`, `ToLower`, `ToUpper`, `TrimRight`,
  `TrimSpace`) and `output`, in order, with Promtail's extracted-map semantics.
- Files are polled every 250 ms (Promtail's poll period); complete lines only.

It pushes Loki's JSON push body (Promtail sends the protobuf form of the same streams).
"""

import glob
import http.client
import json
import os
import re
import ssl
import sys
import time
import urllib.parse
from datetime import datetime

import yaml

POLL_SECONDS = 0.25
DEFAULT_BATCHWAIT = "1s"
DEFAULT_BATCHSIZE = 1 << 20
TIMEOUT_SECONDS = 10


class Unsupported(Exception):
    """Something in the rendered configuration this stand-in does not implement."""


def log(message: str) -> None:
    print(f"level=info ts={time.time():.3f} msg={json.dumps(message)}", file=sys.stderr, flush=True)


def seconds(duration: str) -> float:
    """A Go duration of one unit ("500ms", "10s", "5m")."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", str(duration))
    if not match:
        raise Unsupported(f"duration {duration!r}")
    return float(match[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match[2]]


# --- The Go-template subset of Promtail's `template` stage ---------------------------------------

TOKEN = re.compile(r'\s*(?:(\()|(\))|("(?:[^"\\]|\\.)*")|(\.[A-Za-z_]\w*)|([A-Za-z_]\w*))')
FUNCTIONS = {
    "ToLower": lambda s: s.lower(),
    "ToUpper": lambda s: s.upper(),
    "TrimSpace": lambda s: s.strip(),
    "TrimRight": lambda s, cutset: s.rstrip(cutset),
    "eq": lambda a, b: a == b,
}


def tokens(action: str) -> list[tuple[str, str]]:
    out, pos = [], 0
    while action[pos:].strip():
        match = TOKEN.match(action, pos)
        if not match:
            raise Unsupported(f"template action {action!r} at {action[pos:]!r}")
        kinds = ("open", "close", "string", "field", "name")
        out.append(next((kind, text) for kind, text in zip(kinds, match.groups()) if text is not None))
        pos = match.end()
    return out


def evaluate(toks: list, data: dict):
    """A pipeline-free command: a function applied to operands, or one operand."""

    def operand(i):
        kind, text = toks[i]
        if kind == "string":
            return json.loads(text), i + 1
        if kind == "field":
            if text[1:] not in data:
                raise KeyError(text)
            return data[text[1:]], i + 1
        if kind == "open":
            depth, j = 1, i + 1
            while depth:
                depth += {"open": 1, "close": -1}.get(toks[j][0], 0)
                j += 1
            return evaluate(toks[i + 1 : j - 1], data), j
        raise Unsupported(f"template operand {text!r}")

    if toks and toks[0][0] == "name":
        name = toks[0][1]
        if name not in FUNCTIONS:
            raise Unsupported(f"template function {name!r}")
        args, i = [], 1
        while i < len(toks):
            value, i = operand(i)
            args.append(value)
        return FUNCTIONS[name](*args)
    value, i = operand(0)
    if i != len(toks):
        raise Unsupported(f"template command {toks!r}")
    return value


def parse_template(text: str) -> list:
    """Nodes: ("text", s), ("action", tokens), ("if", tokens, then, else)."""
    parts = re.split(r"\{\{-?(.*?)-?\}\}", text)
    stack = [[]]
    frames = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            if part:
                stack[-1].append(("text", part))
            continue
        words = part.strip()
        if words.startswith("if "):
            node = ["if", tokens(words[3:]), [], []]
            stack[-1].append(node)
            frames.append(node)
            stack.append(node[2])
        elif words == "else":
            stack[-1] = frames[-1][3]
        elif words == "end":
            stack.pop()
            frames.pop()
        else:
            stack[-1].append(("action", tokens(words)))
    if frames:
        raise Unsupported(f"template {text!r}: unterminated if")
    return stack[0]


def render_template(nodes: list, data: dict) -> str:
    out = []
    for node in nodes:
        if node[0] == "text":
            out.append(node[1])
        elif node[0] == "action":
            out.append(str(evaluate(node[1], data)))
        else:
            out.append(render_template(node[2] if evaluate(node[1], data) else node[3], data))
    return "".join(out)


# --- Pipeline stages ----------------------------------------------------------------------------


class Entry:
    def __init__(self, labels: dict, line: str, ts_ns: int):
        self.labels, self.line, self.ts_ns = labels, line, ts_ns
        self.extracted = dict(labels)


def jmespath(value, path: str):
    if not re.fullmatch(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*", path):
        raise Unsupported(f"json expression {path!r} (only dotted names)")
    for key in path.split("."):
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    return value


SELECTOR = re.compile(r'\s*([A-Za-z_]\w*)\s*(=|!=)\s*"((?:[^"\\]|\\.)*)"\s*(?:,|$)')


def selector_matchers(selector: str) -> list:
    body = selector.strip()
    if not (body.startswith("{") and body.endswith("}")):
        raise Unsupported(f"match selector {selector!r} (only a stream selector)")
    body, matchers, pos = body[1:-1], [], 0
    while pos < len(body):
        match = SELECTOR.match(body, pos)
        if not match:
            raise Unsupported(f"match selector {selector!r} (only = and != matchers)")
        matchers.append((match[1], match[2], json.loads(f'"{match[3]}"')))
        pos = match.end()
    return matchers


def stage(kind: str, options):
    """A function Entry -> Entry | None (None: dropped)."""
    if kind == "json":
        expressions = options["expressions"]

        def run(entry):
            try:
                parsed = json.loads(entry.extracted.get(options.get("source"), entry.line) if options.get("source") else entry.line)
            except ValueError:
                return entry
            for name, path in expressions.items():
                value = jmespath(parsed, path or name)
                if value is not None:
                    entry.extracted[name] = value if isinstance(value, str) else json.dumps(value)
            return entry

        return run
    if kind == "regex":
        pattern = re.compile(options["expression"])
        source = options.get("source")

        def run(entry):
            text = entry.line if source is None else entry.extracted.get(source)
            match = pattern.search(text) if isinstance(text, str) else None
            if match:
                entry.extracted.update({k: v or "" for k, v in match.groupdict().items()})
            return entry

        return run
    if kind == "labels":

        def run(entry):
            for name, source in options.items():
                if (source or name) in entry.extracted:
                    entry.labels[name] = str(entry.extracted[source or name])
            return entry

        return run
    if kind == "match":
        if options.get("action", "keep") != "drop" or "stages" in options:
            raise Unsupported("match stage other than action: drop")
        matchers = selector_matchers(options["selector"])

        def run(entry):
            hit = all((entry.labels.get(name, "") == value) == (op == "=") for name, op, value in matchers)
            return None if hit else entry

        return run
    if kind == "labeldrop":

        def run(entry):
            for name in options:
                entry.labels.pop(name, None)
            return entry

        return run
    if kind == "timestamp":
        if options.get("format") not in ("RFC3339Nano", "RFC3339"):
            raise Unsupported(f"timestamp format {options.get('format')!r}")

        def run(entry):
            value = entry.extracted.get(options["source"])
            match = re.fullmatch(r"(.+T\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", value or "")
            if match:  # On failure Promtail keeps the time it read the line (action_on_failure: fudge).
                whole = datetime.fromisoformat(match[1] + match[3].replace("Z", "+00:00"))
                entry.ts_ns = int(whole.timestamp()) * 10**9 + int((match[2] or "0").ljust(9, "0"))
            return entry

        return run
    if kind == "template":
        nodes, source = parse_template(options["template"]), options["source"]

        def run(entry):
            # A missing source leaves the key unset (the template has no string to work on).
            if source in entry.extracted:
                entry.extracted[source] = render_template(nodes, {"Value": entry.extracted[source]})
            return entry

        return run
    if kind == "output":

        def run(entry):
            if options["source"] in entry.extracted:
                entry.line = str(entry.extracted[options["source"]])
            return entry

        return run
    raise Unsupported(f"pipeline stage {kind!r}")


def pipeline(stages: list):
    runs = []
    for item in stages:
        ((kind, options),) = item.items()
        runs.append(stage(kind, options))

    def run(entry):
        for step in runs:
            entry = step(entry)
            if entry is None:
                return None
        return entry

    return run


# --- Targets, positions, client --------------------------------------------------------------


class Target:
    def __init__(self, job: dict):
        unknown = set(job) - {"job_name", "static_configs", "pipeline_stages"}
        if unknown:
            raise Unsupported(f"scrape config keys {sorted(unknown)} in job {job['job_name']!r}")
        ((static,),) = [job["static_configs"]]
        labels = dict(static["labels"])
        self.glob = labels.pop("__path__")
        self.labels = {k: v for k, v in labels.items() if not k.startswith("__")}
        self.run = pipeline(job.get("pipeline_stages", []))


class Positions:
    def __init__(self, path: str):
        self.path = path
        self.offsets = {}
        if os.path.exists(path):
            with open(path) as f:
                self.offsets = {k: int(v) for k, v in ((yaml.safe_load(f) or {}).get("positions") or {}).items()}

    def save(self):
        tmp = self.path + ".tmp"
        with open(tmp, "w") as f:
            yaml.safe_dump({"positions": {k: str(v) for k, v in self.offsets.items()}}, f)
        os.replace(tmp, self.path)


class Client:
    def __init__(self, config: dict):
        unknown = set(config) - {"url", "tls_config", "external_labels", "backoff_config", "batchwait", "batchsize"}
        if unknown:
            raise Unsupported(f"client keys {sorted(unknown)}")
        url = urllib.parse.urlsplit(config["url"])
        if url.scheme != "https":
            raise Unsupported(f"client url {config['url']!r} (only https)")
        self.host, self.port, self.path = url.hostname, url.port or 443, url.path
        tls = config["tls_config"]
        self.context = ssl.create_default_context(cafile=tls["ca_file"])
        self.context.load_cert_chain(tls["cert_file"], tls["key_file"])
        self.external = config.get("external_labels", {})
        backoff = config.get("backoff_config", {})
        self.min_period = seconds(backoff.get("min_period", "500ms"))
        self.max_period = seconds(backoff.get("max_period", "5m"))
        self.max_retries = int(backoff.get("max_retries", 10))
        self.batchwait = seconds(config.get("batchwait", DEFAULT_BATCHWAIT))
        self.batchsize = int(config.get("batchsize", DEFAULT_BATCHSIZE))

    def body(self, entries: list) -> bytes:
        streams = {}
        for entry in entries:
            labels = {k: v for k, v in {**entry.labels, **self.external}.items() if v != ""}
            streams.setdefault(tuple(sorted(labels.items())), []).append([str(entry.ts_ns), entry.line])
        return json.dumps({"streams": [{"stream": dict(k), "values": v} for k, v in streams.items()]}).encode()

    def post(self, body: bytes) -> int:
        conn = http.client.HTTPSConnection(self.host, self.port, context=self.context, timeout=TIMEOUT_SECONDS)
        try:
            conn.request("POST", self.path, body=body, headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            detail = response.read().decode(errors="replace").strip()
            if response.status >= 300:
                log(f"push answered {response.status}: {detail}")
            return response.status
        finally:
            conn.close()

    def send(self, entries: list) -> bool:
        """True once the server took the batch; False if it was dropped (as Promtail drops it)."""
        body, delay = self.body(entries), self.min_period
        for attempt in range(self.max_retries + 1):
            try:
                status = self.post(body)
            except (OSError, http.client.HTTPException) as error:
                log(f"push failed: {error}")
                status = None
            if status is not None and status < 300:
                return True
            if status is not None and 400 <= status < 500 and status != 429:
                log(f"batch of {len(entries)} lines dropped: the server refuses it ({status})")
                return False
            if attempt < self.max_retries:
                time.sleep(delay)
                delay = min(2 * delay, self.max_period)
        log(f"batch of {len(entries)} lines dropped after {self.max_retries} retries")
        return False


def read_new(path: str, offset: int) -> list[tuple[str, int]]:
    """Complete lines after `offset`, each with the offset just past it."""
    with open(path, "rb") as f:
        if os.fstat(f.fileno()).st_size < offset:
            offset = 0  # truncated or replaced: from its start, as Promtail does
        f.seek(offset)
        data = f.read()
    lines, pos = [], offset
    for raw in data.split(b"\n")[:-1]:
        pos += len(raw) + 1
        lines.append((raw.decode(errors="replace"), pos))
    return lines


def main(config_path: str) -> int:
    with open(config_path) as f:
        config = yaml.safe_load(f)
    try:
        unknown = set(config) - {"server", "positions", "clients", "scrape_configs"}
        if unknown:
            raise Unsupported(f"top-level keys {sorted(unknown)}")
        targets = [Target(job) for job in config["scrape_configs"]]
        (client_config,) = config["clients"]
        client = Client(client_config)
    except Unsupported as what:
        print(f"shipper stand-in: unsupported in {config_path}: {what}", file=sys.stderr)
        return 2
    except OSError as error:
        print(f"shipper stand-in: cannot read the TLS files of {config_path}: {error}", file=sys.stderr)
        return 2
    positions = Positions(config["positions"]["filename"])
    pending = []  # (entry, or None where the pipeline dropped the line; path; offset after it)
    oldest = None
    while True:
        for target in targets:
            for path in sorted(glob.glob(target.glob)):
                # What is pending for this file lies past its acknowledged position.
                start = max((o for _, p, o in pending if p == path), default=positions.offsets.get(path, 0))
                for line, offset in read_new(path, start):
                    entry = target.run(Entry({**target.labels, "filename": path}, line, time.time_ns()))
                    pending.append((entry, path, offset))
                    oldest = oldest or time.monotonic()
        size = sum(len(e.line) for e, _, _ in pending if e)
        if pending and (size >= client.batchsize or time.monotonic() - oldest >= client.batchwait):
            while pending:
                # A batch of at most batchsize bytes (one line at least); positions move past it
                # once the server has taken it (or once it is dropped, as Promtail drops it).
                taken, count = 0, 0
                while count < len(pending) and (count == 0 or taken < client.batchsize):
                    taken += len(pending[count][0].line) if pending[count][0] else 0
                    count += 1
                batch, pending = pending[:count], pending[count:]
                entries = [e for e, _, _ in batch if e]
                if entries:
                    client.send(entries)
                for _, path, offset in batch:
                    positions.offsets[path] = offset
                positions.save()
            oldest = None
        time.sleep(POLL_SECONDS)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
