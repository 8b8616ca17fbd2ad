//! Stand-in for Loki, Promtail, Alloy and Grafana in the live compose test (tests/live).
//!
//! No binary of those four exists on the CI machine, so their images carry this program at the
//! tool's entry point (`/bin/loki`, …). It reads its configuration exactly the way the real tool
//! is told to (command line, config file, environment) and checks the container contract the
//! compose file decides, failing loudly — service, path, error — where the real tool would fail
//! or misbehave:
//!
//! - every capability dropped, `no_new_privs` set, the root filesystem mounted read-only;
//! - its config file and every file mounted for it readable (Grafana: provisioning, dashboards,
//!   both secrets through `$__file{…}`, the four provisioning directories, offline settings);
//! - a file created and rewritten in its state directory (Promtail: its positions file);
//! - the shipper can list and read dockerd's json-file logs;
//! - it listens where the config says and answers its health path with 200 and `/metrics` with
//!   Prometheus text (`process_*` read from /proc, as the real tools export).
//!
//! Test-only extras: `GET /standin/log?bytes=N` writes N bytes of log lines to stdout (drives the
//! json-file rotation), and the Grafana stand-in answers `GET /api/user` for `admin` with the
//! password from its secret file (Basic auth), 401 otherwise.
//!
//! The Loki stand-in takes Loki's push API in its JSON form (`POST /loki/api/v1/push`,
//! `Content-Type: application/json`, `{"streams":[{"stream":{labels},"values":[["<ns>","<line>"]]}]}`):
//! 204 once every entry is recorded, 400 naming what is wrong with a malformed body (nothing of
//! it recorded), 415 for another body format (Promtail's protobuf: no decoder here). Each entry
//! becomes one JSON line `{"received_ns","labels","ts","line"}` appended to
//! `<path_prefix>/standin-pushes.jsonl`, which survives a restart as Loki's store does;
//! `GET /standin/pushes` answers that file.
//!
//! Std only (no crate to vendor into an image); SIGTERM exits 0 at once.

use std::collections::HashMap;
use std::env;
use std::fs;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

unsafe extern "C" {
    fn signal(signum: i32, handler: extern "C" fn(i32)) -> usize;
    fn _exit(status: i32) -> !;
}

const SIGTERM: i32 = 15;
const SIGINT: i32 = 2;

extern "C" fn exit_now(_: i32) {
    // SAFETY: _exit is async-signal-safe; nothing needs flushing.
    unsafe { _exit(0) }
}

/// A contract failure: what, where, why.
struct Failure(String);

type Checked<T> = Result<T, Failure>;

fn fail<T>(what: &str, path: &Path, err: impl std::fmt::Display) -> Checked<T> {
    Err(Failure(format!("{what} ({}): {err}", path.display())))
}

fn read(what: &str, path: &Path) -> Checked<String> {
    fs::read_to_string(path).or_else(|err| fail(what, path, err))
}

/// The value after `key:` on the first line that has it (the rendered YAML is one key per line).
fn yaml_value(text: &str, key: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let rest = line
            .trim_start()
            .trim_start_matches("- ")
            .strip_prefix(key)?;
        Some(rest.strip_prefix(':')?.trim().trim_matches('"').to_owned())
    })
}

fn required(text: &str, key: &str, path: &Path) -> Checked<String> {
    yaml_value(text, key).map_or_else(|| fail("config has no key", path, key), Ok)
}

/// `ADDRESS:PORT` from a Loki/Promtail `server` block's `<kind>_listen_address` and `_port`.
fn listen_of(text: &str, kind: &str, path: &Path) -> Checked<String> {
    let address = required(text, &format!("{kind}_listen_address"), path)?;
    let port = required(text, &format!("{kind}_listen_port"), path)?;
    Ok(format!("{address}:{port}"))
}

fn flag(args: &[String], name: &str) -> Option<String> {
    let prefix = format!("{name}=");
    args.iter()
        .find_map(|a| a.strip_prefix(&prefix).map(str::to_owned))
}

fn status_field(field: &str) -> Checked<String> {
    let status = read("process status", Path::new("/proc/self/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix(field).map(|v| v.trim().to_owned()))
        .map_or_else(
            || fail("no field in", Path::new("/proc/self/status"), field),
            Ok,
        )
}

/// Capabilities, no_new_privs, read-only root: what compose's cap_drop, security_opt and
/// read_only decide.
fn check_confinement() -> Checked<()> {
    let status = Path::new("/proc/self/status");
    let caps = status_field("CapEff:")?;
    if u64::from_str_radix(&caps, 16).unwrap_or(u64::MAX) != 0 {
        return fail(
            "capabilities are not all dropped",
            status,
            format!("CapEff {caps}"),
        );
    }
    let nnp = status_field("NoNewPrivs:")?;
    if nnp != "1" {
        return fail(
            "no_new_privs is not set",
            status,
            format!("NoNewPrivs {nnp}"),
        );
    }
    let mountinfo = Path::new("/proc/self/mountinfo");
    let root = read("mount table", mountinfo)?
        .lines()
        .find(|l| l.split(' ').nth(4) == Some("/"))
        .map(str::to_owned);
    let options = root
        .as_deref()
        .and_then(|l| l.split(' ').nth(5))
        .unwrap_or("");
    if !options.split(',').any(|o| o == "ro") {
        return fail(
            "root filesystem is not read-only",
            mountinfo,
            format!("mount options {options:?}"),
        );
    }
    Ok(())
}

/// Create `path`, then rewrite it through a temporary file and a rename (as the tools persist
/// state), and read the result back.
fn create_and_rewrite(path: &Path, service: &str) -> Checked<()> {
    let what = "cannot write in the state directory";
    fs::write(path, format!("{service} created\n")).or_else(|err| fail(what, path, err))?;
    let tmp = path.with_extension("tmp");
    let content = format!("{service} rewritten\n");
    fs::write(&tmp, &content).or_else(|err| fail(what, &tmp, err))?;
    fs::rename(&tmp, path).or_else(|err| fail(what, path, err))?;
    if read(what, path)? != content {
        return fail(what, path, "content read back differs");
    }
    Ok(())
}

/// Every regular file under `dir`, read; the number read.
fn read_tree(what: &str, dir: &Path) -> Checked<usize> {
    let mut count = 0;
    let entries = fs::read_dir(dir).or_else(|err| fail(what, dir, err))?;
    for entry in entries {
        let path = entry.or_else(|err| fail(what, dir, err))?.path();
        if path.is_dir() {
            count += read_tree(what, &path)?;
        } else {
            fs::read(&path).or_else(|err| fail(what, &path, err))?;
            count += 1;
        }
    }
    Ok(count)
}

/// The shipper's job: list dockerd's container directories and read the json-file logs in them
/// (`__path__` is `<hostDir>/*/*-json.log`).
fn read_container_logs(glob: &str) -> Checked<usize> {
    let what = "cannot read the container logs";
    let dir = Path::new(glob.split("/*/").next().unwrap_or(glob));
    let mut read_logs = 0;
    for entry in fs::read_dir(dir).or_else(|err| fail(what, dir, err))? {
        let container = entry.or_else(|err| fail(what, dir, err))?.path();
        for file in fs::read_dir(&container).or_else(|err| fail(what, &container, err))? {
            let file = file.or_else(|err| fail(what, &container, err))?.path();
            if file.to_string_lossy().ends_with("-json.log") {
                fs::read(&file).or_else(|err| fail(what, &file, err))?;
                read_logs += 1;
            }
        }
    }
    if read_logs == 0 {
        return fail(what, dir, "no *-json.log file found");
    }
    Ok(read_logs)
}

/// Grafana expands `$__file{PATH}` in any setting; `*__FILE` variables are handled only by the
/// shell entrypoint of Grafana's upstream image, which ours does not have.
fn grafana_secret(variable: &str) -> Checked<String> {
    let env_path = PathBuf::from(format!("${variable}"));
    let Ok(value) = env::var(variable) else {
        let hint = if env::var_os(format!("{variable}__FILE")).is_some() {
            "only __FILE is set, which the grafana binary ignores"
        } else {
            "unset"
        };
        return fail("Grafana would run with its public default", &env_path, hint);
    };
    let Some(path) = value
        .strip_prefix("$__file{")
        .and_then(|v| v.strip_suffix('}'))
    else {
        return fail("secret is not a $__file{} reference", &env_path, value);
    };
    let secret = read("cannot read the secret", Path::new(path))?;
    if secret.trim().is_empty() {
        return fail("secret is empty", Path::new(path), "0 bytes");
    }
    Ok(secret.trim().to_owned())
}

fn env_is(variable: &str, wanted: &str, why: &str) -> Checked<()> {
    match env::var(variable) {
        Ok(v) if v == wanted => Ok(()),
        other => fail(
            why,
            &PathBuf::from(format!("${variable}")),
            format!("{other:?}, want {wanted:?}"),
        ),
    }
}

/// What the checks found that the HTTP side needs.
struct Service {
    name: String,
    listen: String,
    health_path: &'static str,
    admin_password: Option<String>,
    /// Extra listeners (Loki's gRPC port).
    extra_listen: Vec<String>,
    /// Loki: where pushed entries are recorded (the lock keeps each push's lines together).
    pushes: Option<Mutex<PathBuf>>,
}

fn setup(name: &str, args: &[String]) -> Checked<Service> {
    check_confinement()?;
    let config_path = |flag_value: Option<String>| -> Checked<PathBuf> {
        flag_value.map(PathBuf::from).map_or_else(
            || fail("no config file argument", Path::new(name), "missing"),
            Ok,
        )
    };
    match name {
        "loki" => {
            let path = config_path(flag(args, "-config.file"))?;
            let config = read("cannot read the config", &path)?;
            let data = PathBuf::from(required(&config, "path_prefix", &path)?);
            create_and_rewrite(&data.join("standin-state"), name)?;
            let grpc = listen_of(&config, "grpc", &path)?;
            Ok(Service {
                name: name.into(),
                listen: listen_of(&config, "http", &path)?,
                health_path: "/ready",
                admin_password: None,
                extra_listen: vec![grpc],
                pushes: Some(Mutex::new(data.join("standin-pushes.jsonl"))),
            })
        }
        "promtail" => {
            let path = config_path(flag(args, "-config.file"))?;
            let config = read("cannot read the config", &path)?;
            let positions = PathBuf::from(required(&config, "filename", &path)?);
            create_and_rewrite(&positions, name)?;
            let logs = read_container_logs(&required(&config, "__path__", &path)?)?;
            println!("level=info msg=\"read container logs\" files={logs}");
            Ok(Service {
                name: name.into(),
                listen: listen_of(&config, "http", &path)?,
                health_path: "/ready",
                admin_password: None,
                extra_listen: vec![],
                pushes: None,
            })
        }
        "alloy" => {
            let path = config_path(args.last().cloned())?;
            let config = read("cannot read the config", &path)?;
            let storage = config_path(flag(args, "--storage.path"))?;
            create_and_rewrite(&storage.join("standin-state"), name)?;
            read_container_logs(&required(&config, "__path__", &path)?)?;
            Ok(Service {
                name: name.into(),
                listen: flag(args, "--server.http.listen-addr").unwrap_or("127.0.0.1:12345".into()),
                health_path: "/-/ready",
                admin_password: None,
                extra_listen: vec![],
                pushes: None,
            })
        }
        "grafana" => {
            let offline = "Grafana would reach grafana.com at start";
            env_is("GF_PLUGINS_PREINSTALL_DISABLED", "true", offline)?;
            env_is("GF_ANALYTICS_CHECK_FOR_UPDATES", "false", offline)?;
            env_is("GF_ANALYTICS_CHECK_FOR_PLUGIN_UPDATES", "false", offline)?;
            let data =
                PathBuf::from(env::var("GF_PATHS_DATA").unwrap_or("/var/lib/grafana".into()));
            create_and_rewrite(&data.join("standin-state"), name)?;
            let provisioning = PathBuf::from(
                env::var("GF_PATHS_PROVISIONING").unwrap_or("/etc/grafana/provisioning".into()),
            );
            for kind in ["datasources", "dashboards", "alerting", "plugins"] {
                read_tree(
                    "Grafana logs an error for this provisioning directory",
                    &provisioning.join(kind),
                )?;
            }
            let providers = provisioning.join("dashboards/dashboards.yml");
            let dashboards = PathBuf::from(required(
                &read("cannot read", &providers)?,
                "path",
                &providers,
            )?);
            if read_tree("cannot read the dashboards", &dashboards)? == 0 {
                return fail("no dashboard to provision", &dashboards, "empty");
            }
            let password = grafana_secret("GF_SECURITY_ADMIN_PASSWORD")?;
            grafana_secret("GF_SECURITY_SECRET_KEY")?;
            Ok(Service {
                name: name.into(),
                listen: format!(
                    "0.0.0.0:{}",
                    env::var("GF_SERVER_HTTP_PORT").unwrap_or("3000".into())
                ),
                health_path: "/api/health",
                admin_password: Some(password),
                extra_listen: vec![],
                pushes: None,
            })
        }
        other => fail(
            "unknown stand-in",
            Path::new(other),
            "install it as /bin/{loki,promtail,alloy,grafana}",
        ),
    }
}

fn process_metrics() -> String {
    let stat = fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let number = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Field numbers of proc(5) minus 3 (pid and comm are cut off): utime 14, stime 15, rss 24.
    let ticks = 100.0;
    let cpu = (number(11) + number(12)) / ticks;
    let rss = number(21) * 4096.0;
    let boot = fs::read_to_string("/proc/stat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix("btime ")
                .and_then(|v| v.trim().parse::<f64>().ok())
        })
        .unwrap_or(0.0);
    let start = boot + number(19) / ticks;
    let fds = fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0);
    format!(
        "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu}\n\
         # TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {rss}\n\
         # TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {start}\n\
         # TYPE process_open_fds gauge\nprocess_open_fds {fds}\n\
         # TYPE process_max_fds gauge\nprocess_max_fds 1048576\n"
    )
}

fn respond(stream: &mut TcpStream, status: &str, content_type: &str, body: &str) -> io::Result<()> {
    if status.starts_with("204") {
        // A 204 carries neither a body nor its length (RFC 9110 8.6).
        return write!(stream, "HTTP/1.1 {status}\r\nConnection: close\r\n\r\n");
    }
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn base64(input: &str) -> String {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.as_bytes().chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(TABLE[(n >> (18 - 6 * i)) as usize & 63] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A JSON value, as much of it as a push body needs (numbers kept as their text).
#[derive(Debug, PartialEq)]
enum Json {
    Null,
    Bool(bool),
    Number(String),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

/// Nesting beyond this is refused rather than recursed into.
const MAX_DEPTH: usize = 64;

struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
}

fn parse_json(text: &str) -> Result<Json, String> {
    let mut parser = Parser {
        bytes: text.as_bytes(),
        pos: 0,
    };
    let value = parser.value(0)?;
    if parser.peek().is_some() {
        return Err(parser.error("characters after the JSON value"));
    }
    Ok(value)
}

impl Parser<'_> {
    fn error(&self, what: &str) -> String {
        format!("invalid JSON at byte {}: {what}", self.pos)
    }

    /// The next byte after any whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        while matches!(self.bytes.get(self.pos), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
        self.bytes.get(self.pos).copied()
    }

    fn expect(&mut self, byte: u8) -> Result<(), String> {
        if self.peek() == Some(byte) {
            self.pos += 1;
            Ok(())
        } else {
            Err(self.error(&format!("expected '{}'", byte as char)))
        }
    }

    fn literal(&mut self, word: &str, value: Json) -> Result<Json, String> {
        if self.bytes[self.pos..].starts_with(word.as_bytes()) {
            self.pos += word.len();
            Ok(value)
        } else {
            Err(self.error("expected a value"))
        }
    }

    fn value(&mut self, depth: usize) -> Result<Json, String> {
        if depth > MAX_DEPTH {
            return Err(self.error(&format!("nested deeper than {MAX_DEPTH} levels")));
        }
        match self.peek() {
            None => Err(self.error("unexpected end of input")),
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(Json::Str),
            Some(b't') => self.literal("true", Json::Bool(true)),
            Some(b'f') => self.literal("false", Json::Bool(false)),
            Some(b'n') => self.literal("null", Json::Null),
            Some(b'-' | b'0'..=b'9') => self.number(),
            Some(_) => Err(self.error("expected a value")),
        }
    }

    fn object(&mut self, depth: usize) -> Result<Json, String> {
        self.expect(b'{')?;
        let mut fields = Vec::new();
        if self.peek() == Some(b'}') {
            self.pos += 1;
            return Ok(Json::Object(fields));
        }
        loop {
            if self.peek() != Some(b'"') {
                return Err(self.error("expected a string key"));
            }
            let key = self.string()?;
            self.expect(b':')?;
            fields.push((key, self.value(depth + 1)?));
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Json::Object(fields));
                }
                _ => return Err(self.error("expected ',' or '}'")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Json, String> {
        self.expect(b'[')?;
        let mut items = Vec::new();
        if self.peek() == Some(b']') {
            self.pos += 1;
            return Ok(Json::Array(items));
        }
        loop {
            items.push(self.value(depth + 1)?);
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.pos += 1;
                    return Ok(Json::Array(items));
                }
                _ => return Err(self.error("expected ',' or ']'")),
            }
        }
    }

    fn number(&mut self) -> Result<Json, String> {
        let start = self.pos;
        while matches!(
            self.bytes.get(self.pos),
            Some(b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
        ) {
            self.pos += 1;
        }
        let text = String::from_utf8_lossy(&self.bytes[start..self.pos]).into_owned();
        let digits = text.trim_start_matches('-');
        if !digits.starts_with(|c: char| c.is_ascii_digit()) || text.parse::<f64>().is_err() {
            self.pos = start;
            return Err(self.error(&format!("malformed number {text:?}")));
        }
        Ok(Json::Number(text))
    }

    fn hex4(&mut self) -> Result<u32, String> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .ok_or_else(|| self.error("\\u needs four hex digits"))?;
        self.pos += 4;
        Ok(digits)
    }

    fn string(&mut self) -> Result<String, String> {
        self.expect(b'"')?;
        let mut out = Vec::new();
        loop {
            let Some(&byte) = self.bytes.get(self.pos) else {
                return Err(self.error("unterminated string"));
            };
            self.pos += 1;
            match byte {
                b'"' => break,
                b'\\' => {
                    let Some(&escape) = self.bytes.get(self.pos) else {
                        return Err(self.error("unterminated string"));
                    };
                    self.pos += 1;
                    let simple = match escape {
                        b'"' => '"',
                        b'\\' => '\\',
                        b'/' => '/',
                        b'b' => '\u{8}',
                        b'f' => '\u{c}',
                        b'n' => '\n',
                        b'r' => '\r',
                        b't' => '\t',
                        b'u' => {
                            let high = self.hex4()?;
                            let code = if (0xD800..0xDC00).contains(&high) {
                                if !self.bytes[self.pos..].starts_with(b"\\u") {
                                    return Err(self.error("lone UTF-16 surrogate in \\u escape"));
                                }
                                self.pos += 2;
                                let low = self.hex4()?;
                                if !(0xDC00..0xE000).contains(&low) {
                                    return Err(self.error("lone UTF-16 surrogate in \\u escape"));
                                }
                                0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                            } else {
                                high
                            };
                            char::from_u32(code)
                                .ok_or_else(|| self.error("lone UTF-16 surrogate in \\u escape"))?
                        }
                        _ => return Err(self.error("unknown escape in string")),
                    };
                    let mut buffer = [0; 4];
                    out.extend_from_slice(simple.encode_utf8(&mut buffer).as_bytes());
                }
                0..0x20 => {
                    self.pos -= 1;
                    return Err(self.error("control character in string (escape it)"));
                }
                _ => out.push(byte),
            }
        }
        // Bytes were copied from valid UTF-8 and escapes encoded as UTF-8.
        String::from_utf8(out).map_err(|_| self.error("string is not UTF-8"))
    }
}

fn json_string(text: &str) -> String {
    let mut out = String::from("\"");
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// One log entry of a push: its stream's labels, its timestamp (ns), its line.
#[derive(Debug, PartialEq)]
struct Entry {
    labels: Vec<(String, String)>,
    ts: String,
    line: String,
}

fn field<'a>(fields: &'a [(String, Json)], name: &str) -> Option<&'a Json> {
    fields.iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn label_name_ok(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// The entries of a Loki JSON push body, or what is wrong with it, named by its place.
fn push_entries(body: &str) -> Result<Vec<Entry>, String> {
    const VALUE: &str = "[\"<unix epoch in nanoseconds>\", \"<log line>\"] (and an optional object of structured metadata)";
    let Json::Object(top) = parse_json(body)? else {
        return Err("the push body must be a JSON object {\"streams\": [...]}".into());
    };
    let streams = match field(&top, "streams") {
        Some(Json::Array(streams)) => streams,
        Some(_) => return Err("\"streams\" must be an array".into()),
        None => return Err("the push body has no \"streams\"".into()),
    };
    let mut entries = Vec::new();
    for (i, stream) in streams.iter().enumerate() {
        let at = format!("streams[{i}]");
        let Json::Object(stream) = stream else {
            return Err(format!(
                "{at} must be an object with \"stream\" and \"values\""
            ));
        };
        let Some(Json::Object(pairs)) = field(stream, "stream") else {
            return Err(format!(
                "{at}.stream must be an object of label names to string values"
            ));
        };
        if pairs.is_empty() {
            return Err(format!(
                "{at}.stream: at least one label pair is required per stream"
            ));
        }
        let mut labels: Vec<(String, String)> = Vec::new();
        for (name, value) in pairs {
            if !label_name_ok(name) {
                return Err(format!(
                    "{at}.stream: invalid label name {name:?} (letters, digits and _, not starting with a digit)"
                ));
            }
            if labels.iter().any(|(n, _)| n == name) {
                return Err(format!("{at}.stream: duplicate label name {name:?}"));
            }
            let Json::Str(value) = value else {
                return Err(format!("{at}.stream.{name}: label values must be strings"));
            };
            labels.push((name.clone(), value.clone()));
        }
        let Some(Json::Array(values)) = field(stream, "values") else {
            return Err(format!("{at}.values must be an array of {VALUE}"));
        };
        for (j, value) in values.iter().enumerate() {
            let at = format!("{at}.values[{j}]");
            let (ts, line) = match value {
                Json::Array(pair) => match pair.as_slice() {
                    [Json::Str(ts), Json::Str(line)]
                    | [Json::Str(ts), Json::Str(line), Json::Object(_)] => (ts, line),
                    _ => return Err(format!("{at} must be {VALUE}")),
                },
                _ => return Err(format!("{at} must be {VALUE}")),
            };
            if ts.is_empty() || !ts.bytes().all(|b| b.is_ascii_digit()) || ts.len() > 19 {
                return Err(format!(
                    "{at}[0]: the timestamp must be a string of nanoseconds since the epoch (got {ts:?})"
                ));
            }
            entries.push(Entry {
                labels: labels.clone(),
                ts: ts.clone(),
                line: line.clone(),
            });
        }
    }
    Ok(entries)
}

/// One recorded entry: a JSON line of `received_ns`, `labels`, `ts` and `line`.
fn record_line(entry: &Entry, received_ns: u128) -> String {
    let labels: Vec<String> = entry
        .labels
        .iter()
        .map(|(k, v)| format!("{}:{}", json_string(k), json_string(v)))
        .collect();
    format!(
        "{{\"received_ns\":\"{received_ns}\",\"labels\":{{{}}},\"ts\":\"{}\",\"line\":{}}}\n",
        labels.join(","),
        entry.ts,
        json_string(&entry.line)
    )
}

/// Loki accepts pushes of a few MiB; nginx in front admits 16 MiB (client_max_body_size).
const MAX_PUSH_BYTES: usize = 16 << 20;

/// `POST /loki/api/v1/push`: status and body of the answer.
fn push(
    record: &Mutex<PathBuf>,
    method: &str,
    headers: &HashMap<String, String>,
    reader: &mut impl Read,
) -> (&'static str, String) {
    if method != "POST" {
        return ("405 Method Not Allowed", "push with POST\n".into());
    }
    let content_type = headers.get("content-type").map_or("", String::as_str);
    if content_type.split(';').next().map(str::trim) != Some("application/json") {
        return (
            "415 Unsupported Media Type",
            format!(
                "the Loki stand-in reads JSON push bodies only (Content-Type: application/json), got {content_type:?}\n"
            ),
        );
    }
    let Some(length) = headers
        .get("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    else {
        return (
            "411 Length Required",
            "a push needs a Content-Length\n".into(),
        );
    };
    if length > MAX_PUSH_BYTES {
        return (
            "413 Payload Too Large",
            format!("push of {length} bytes; at most {MAX_PUSH_BYTES}\n"),
        );
    }
    let mut body = vec![0; length];
    if let Err(err) = reader.read_exact(&mut body) {
        return ("400 Bad Request", format!("reading the push body: {err}\n"));
    }
    let Ok(body) = String::from_utf8(body) else {
        return ("400 Bad Request", "the push body is not UTF-8\n".into());
    };
    let entries = match push_entries(&body) {
        Ok(entries) => entries,
        Err(why) => return ("400 Bad Request", format!("{why}\n")),
    };
    let received_ns = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let lines: String = entries
        .iter()
        .map(|entry| record_line(entry, received_ns))
        .collect();
    let path = record
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let written = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&*path)
        .and_then(|mut file| file.write_all(lines.as_bytes()));
    match written {
        Ok(()) => ("204 No Content", String::new()),
        Err(err) => (
            "500 Internal Server Error",
            format!("recording the push in {}: {err}\n", path.display()),
        ),
    }
}

fn handle(service: &Service, mut stream: TcpStream) -> io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut headers = HashMap::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    let method = request.split_whitespace().next().unwrap_or("");
    let target = request.split_whitespace().nth(1).unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let text = "text/plain; version=0.0.4; charset=utf-8";
    if path == service.health_path {
        respond(&mut stream, "200 OK", "text/plain", "ready\n")
    } else if let (Some(record), "/loki/api/v1/push") = (&service.pushes, path) {
        let (status, body) = push(record, method, &headers, &mut reader);
        respond(&mut stream, status, "text/plain; charset=utf-8", &body)
    } else if let (Some(record), "/standin/pushes") = (&service.pushes, path) {
        let path = record
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let recorded = fs::read_to_string(&*path).unwrap_or_default();
        respond(&mut stream, "200 OK", "application/x-ndjson", &recorded)
    } else if path == "/metrics" {
        let body = format!(
            "# TYPE standin_info gauge\nstandin_info{{service=\"{}\"}} 1\n{}",
            service.name,
            process_metrics()
        );
        respond(&mut stream, "200 OK", text, &body)
    } else if path == "/standin/log" {
        let bytes: usize = query
            .strip_prefix("bytes=")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let line = format!(
            "level=info msg=\"rotation filler\" service={} pad={}\n",
            service.name,
            "x".repeat(400)
        );
        let mut out = io::stdout().lock();
        for _ in 0..bytes.div_ceil(line.len()) {
            out.write_all(line.as_bytes())?;
        }
        out.flush()?;
        respond(&mut stream, "200 OK", "text/plain", "written\n")
    } else if let (Some(password), "/api/user") = (&service.admin_password, path) {
        let expected = format!("Basic {}", base64(&format!("admin:{password}")));
        if headers.get("authorization") == Some(&expected) {
            respond(
                &mut stream,
                "200 OK",
                "application/json",
                "{\"login\":\"admin\"}",
            )
        } else {
            respond(
                &mut stream,
                "401 Unauthorized",
                "application/json",
                "{\"message\":\"invalid username or password\"}",
            )
        }
    } else {
        respond(&mut stream, "404 Not Found", "text/plain", "not found\n")
    }
}

fn listen(what: &str, address: &str) -> Checked<TcpListener> {
    TcpListener::bind(address).or_else(|err| fail(what, Path::new(address), err))
}

fn main() -> ExitCode {
    // SAFETY: installs a handler that only calls _exit.
    unsafe {
        signal(SIGTERM, exit_now);
        signal(SIGINT, exit_now);
    }
    let args: Vec<String> = env::args().collect();
    let name = Path::new(&args[0])
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let service = match setup(&name, &args[1..]) {
        Ok(service) => service,
        Err(Failure(why)) => {
            eprintln!("level=error msg=\"stand-in {name}: CONTRACT FAILED: {why}\"");
            return ExitCode::FAILURE;
        }
    };
    let listeners = match std::iter::once(&service.listen)
        .chain(&service.extra_listen)
        .map(|address| listen("cannot listen", address))
        .collect::<Checked<Vec<_>>>()
    {
        Ok(listeners) => listeners,
        Err(Failure(why)) => {
            eprintln!("level=error msg=\"stand-in {name}: CONTRACT FAILED: {why}\"");
            return ExitCode::FAILURE;
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    println!(
        "level=info ts={now} msg=\"stand-in {name} ready\" listen={} uid={}",
        service.listen,
        status_field("Uid:")
            .unwrap_or_default()
            .split_whitespace()
            .next()
            .unwrap_or("?")
    );
    let service = Arc::new(service);
    let mut listeners = listeners.into_iter();
    let main_listener = listeners.next().expect("one listener at least");
    for extra in listeners {
        // Bound only: nothing dials the gRPC port of a single-node Loki but Loki itself.
        thread::spawn(move || for _ in extra.incoming() {});
    }
    for stream in main_listener.incoming().flatten() {
        let service = Arc::clone(&service);
        thread::spawn(move || {
            let _ = handle(&service, stream);
        });
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(labels: &[(&str, &str)], ts: &str, line: &str) -> Entry {
        Entry {
            labels: labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            ts: ts.into(),
            line: line.into(),
        }
    }

    #[test]
    fn json_values_escapes_and_nesting_parse() {
        assert_eq!(
            parse_json(
                r#" {"a": [1, -2.5e3, true, false, null], "b": "x\"\\\/\n\u00e9\ud83d\ude00"} "#
            ),
            Ok(Json::Object(vec![
                (
                    "a".into(),
                    Json::Array(vec![
                        Json::Number("1".into()),
                        Json::Number("-2.5e3".into()),
                        Json::Bool(true),
                        Json::Bool(false),
                        Json::Null,
                    ])
                ),
                ("b".into(), Json::Str("x\"\\/\né😀".into())),
            ]))
        );
        assert_eq!(parse_json("\"ü\""), Ok(Json::Str("ü".into())));
    }

    #[test]
    fn malformed_json_is_refused_naming_the_place() {
        for (text, why) in [
            ("", "byte 0: unexpected end of input"),
            ("{\"a\" 1}", "byte 5: expected ':'"),
            ("[1, 2", "byte 5: expected ',' or ']'"),
            ("{\"a\": 1,}", "byte 8: expected a string key"),
            ("\"abc", "unterminated string"),
            ("\"a\nb\"", "byte 2: control character in string"),
            ("\"\\x\"", "unknown escape"),
            ("\"\\ud83d\"", "lone UTF-16 surrogate"),
            ("{} x", "byte 3: characters after the JSON value"),
            ("-", "malformed number \"-\""),
            ("tru", "expected a value"),
        ] {
            let err = parse_json(text).unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
        }
        let deep = "[".repeat(MAX_DEPTH + 2);
        assert!(parse_json(&deep).unwrap_err().contains("nested deeper"));
    }

    #[test]
    fn a_push_body_gives_every_entry_with_its_streams_labels() {
        let body = r#"{"streams":[
            {"stream":{"host":"app1","level":"info"},"values":[["1700000000000000001","first"],["1700000000000000002","second",{"trace_id":"x"}]]},
            {"stream":{"host":"app2"},"values":[]},
            {"stream":{"host":"app3"},"values":[["3","third \"quoted\""]]}
        ]}"#;
        assert_eq!(
            push_entries(body),
            Ok(vec![
                entry(
                    &[("host", "app1"), ("level", "info")],
                    "1700000000000000001",
                    "first"
                ),
                entry(
                    &[("host", "app1"), ("level", "info")],
                    "1700000000000000002",
                    "second"
                ),
                entry(&[("host", "app3")], "3", "third \"quoted\""),
            ])
        );
        assert_eq!(push_entries(r#"{"streams":[]}"#), Ok(vec![]));
    }

    #[test]
    fn a_malformed_push_is_refused_naming_what_is_wrong() {
        for (body, why) in [
            ("[]", "must be a JSON object"),
            ("{}", "has no \"streams\""),
            (r#"{"streams":{}}"#, "\"streams\" must be an array"),
            (r#"{"streams":[1]}"#, "streams[0] must be an object"),
            (
                r#"{"streams":[{"values":[]}]}"#,
                "streams[0].stream must be an object",
            ),
            (
                r#"{"streams":[{"stream":{},"values":[]}]}"#,
                "streams[0].stream: at least one label pair",
            ),
            (
                r#"{"streams":[{"stream":{"1x":"a"},"values":[]}]}"#,
                "invalid label name \"1x\"",
            ),
            (
                r#"{"streams":[{"stream":{"a":"1","a":"2"},"values":[]}]}"#,
                "duplicate label name \"a\"",
            ),
            (
                r#"{"streams":[{"stream":{"a":1},"values":[]}]}"#,
                "streams[0].stream.a: label values must be strings",
            ),
            (
                r#"{"streams":[{"stream":{"a":"1"}}]}"#,
                "streams[0].values must be an array",
            ),
            (
                r#"{"streams":[{"stream":{"a":"1"},"values":[["1"]]}]}"#,
                "streams[0].values[0] must be [",
            ),
            (
                r#"{"streams":[{"stream":{"a":"1"},"values":[[1,"x"]]}]}"#,
                "streams[0].values[0] must be [",
            ),
            (
                r#"{"streams":[{"stream":{"a":"1"},"values":[["1","ok"],["2024-01-01","x"]]}]}"#,
                "streams[0].values[1][0]: the timestamp must be a string of nanoseconds",
            ),
            (r#"{"streams":[}"#, "invalid JSON at byte 12"),
        ] {
            let err = push_entries(body).unwrap_err();
            assert!(err.contains(why), "{body}: {err}");
        }
    }

    #[test]
    fn a_recorded_entry_is_one_json_line_that_parses_back() {
        let line = record_line(
            &entry(&[("host", "app1")], "42", "tab\there \"q\" \u{1}"),
            7,
        );
        assert!(line.ends_with('\n') && line.matches('\n').count() == 1);
        assert_eq!(
            parse_json(&line),
            Ok(Json::Object(vec![
                ("received_ns".into(), Json::Str("7".into())),
                (
                    "labels".into(),
                    Json::Object(vec![("host".into(), Json::Str("app1".into()))])
                ),
                ("ts".into(), Json::Str("42".into())),
                ("line".into(), Json::Str("tab\there \"q\" \u{1}".into())),
            ]))
        );
    }

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn a_push_is_recorded_and_a_refused_one_records_nothing() {
        let dir = env::temp_dir().join(format!("standin-push-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let record = Mutex::new(dir.join("pushes.jsonl"));
        let body = r#"{"streams":[{"stream":{"host":"app1"},"values":[["1","a"],["2","b"]]}]}"#;
        let json = |length: usize| {
            headers(&[
                ("content-type", "application/json"),
                ("content-length", &length.to_string()),
            ])
        };
        let answer = push(&record, "POST", &json(body.len()), &mut body.as_bytes());
        assert_eq!(answer, ("204 No Content", String::new()));
        let bad = r#"{"streams":[{"stream":{"host":"app1"},"values":[["1","a"],["x","b"]]}]}"#;
        let (status, why) = push(&record, "POST", &json(bad.len()), &mut bad.as_bytes());
        assert_eq!(status, "400 Bad Request");
        assert!(why.contains("values[1][0]"), "{why}");
        let protobuf = headers(&[
            ("content-type", "application/x-protobuf"),
            ("content-length", "1"),
        ]);
        assert_eq!(
            push(&record, "POST", &protobuf, &mut &b"x"[..]).0,
            "415 Unsupported Media Type"
        );
        assert_eq!(
            push(&record, "GET", &json(0), &mut &b""[..]).0,
            "405 Method Not Allowed"
        );
        let recorded = fs::read_to_string(dir.join("pushes.jsonl")).unwrap();
        let lines: Vec<&str> = recorded.lines().collect();
        assert_eq!(lines.len(), 2, "{recorded}");
        assert!(lines[0].contains("\"line\":\"a\"") && lines[1].contains("\"line\":\"b\""));
        fs::remove_dir_all(dir).unwrap();
    }
}
