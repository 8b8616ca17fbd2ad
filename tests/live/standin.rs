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
//! Std only (no crate to vendor into an image); SIGTERM exits 0 at once.

use std::collections::HashMap;
use std::env;
use std::fs;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
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
    let target = request.split_whitespace().nth(1).unwrap_or("/");
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let text = "text/plain; version=0.0.4; charset=utf-8";
    if path == service.health_path {
        respond(&mut stream, "200 OK", "text/plain", "ready\n")
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
