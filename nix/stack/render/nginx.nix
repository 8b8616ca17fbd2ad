# The server's receiver: nginx terminating mutual TLS on the non-loopback address and admitting
# exactly two paths, Prometheus remote write and Loki push, from clients whose certificate the
# user's CA signed. Every other path is 404; a client without such a certificate is refused in
# the handshake's aftermath (400) before any location is tried. Tested with Debian's nginx 1.22.
# With `receiver.crlFile`, nginx checks a CRL for every certificate of the client's chain, the
# CA's own included (the CA's CRL covers it): one CRL per CA of the chain, none of them past its
# nextUpdate, or every client is refused.
stack:
{
  target,
  # Where nginx reads server.crt, server.key, client-ca.crt (and client-ca.crl, see
  # ./receiver-tls.nix): the declared files by default, or one directory (the compose mount, the
  # NixOS unit's credentials directory).
  tlsDir ? null,
  # Writable directory for nginx's temporary files and pid (the unit's or container's state).
  stateDir ? "/var/lib/warpwatch-receiver",
}:
let
  inherit (import ../lib.nix) addressOf listenAddress;
  address = addressOf "configs.nginx" target;
  health = stack.services.receiver;
  upstream = name: "http://${address name}:${toString stack.services.${name}.port}";
  inherit (stack) receiver;
  # On a host, the declared address itself; in compose, every interface of the container, and
  # the published port binds `receiver.bindAddress` on the host (the container has no such address).
  tlsListen = if target == "host" then receiver.bindAddress else listenAddress "configs.nginx" target;
  tls = builtins.listToAttrs (
    map (file: {
      name = file.field;
      value = if tlsDir == null then file.file else "${tlsDir}/${file.name}";
    }) (import ./receiver-tls.nix stack)
  );
  crlDirective = if tls ? crlFile then "\n    ssl_crl ${tls.crlFile};" else "";
  # Remote-write bodies are snappy batches of at most a few MiB; Loki pushes likewise.
  location = path: service: ''
    location = ${path} {
      limit_except POST { deny all; }
      proxy_pass ${upstream service};
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }
  '';
in
''
  # Rendered from the warpwatch declaration (nix/stack/render/nginx.nix): do not edit.
  worker_processes 1;
  pid ${stateDir}/nginx.pid;
  error_log stderr warn;
  daemon off;

  events {
    worker_connections 512;
  }

  http {
    access_log off;
    server_tokens off;
    client_max_body_size 16m;
    # Bodies stay in memory: a body larger than the buffer would go to a temporary file, which
    # an agent's backlog after an outage produces, and which needs a writable directory for
    # nginx's worker user.
    client_body_buffer_size 16m;
    client_body_temp_path ${stateDir}/client_body;
    proxy_temp_path ${stateDir}/proxy;
    fastcgi_temp_path ${stateDir}/fastcgi;
    uwsgi_temp_path ${stateDir}/uwsgi;
    scgi_temp_path ${stateDir}/scgi;

    server {
      listen ${tlsListen}:${toString receiver.port} ssl;
      ssl_protocols TLSv1.2 TLSv1.3;
      ssl_certificate ${tls.certFile};
      ssl_certificate_key ${tls.keyFile};
      ssl_client_certificate ${tls.clientCaFile};${crlDirective}
      ssl_verify_client on;
      ssl_verify_depth 2;

  ${location "/api/v1/write" "prometheus"}
  ${location "/loki/api/v1/push" "loki"}
      location / {
        return 404;
      }
    }

    # Plain HTTP for the stack alone (loopback on a host, the stack network in compose): the
    # health probe, and a gauge whose scrape is Prometheus' `up` for the receiver (nginx has no
    # Prometheus metrics of its own).
    server {
      listen ${listenAddress "configs.nginx" target}:${toString health.port};
      location = ${health.healthPath} {
        return 200 "ok\n";
      }
      location = ${health.metricsPath} {
        default_type "text/plain; version=0.0.4";
        return 200 "# HELP warpwatch_receiver_up The receiver answers.\n# TYPE warpwatch_receiver_up gauge\nwarpwatch_receiver_up 1\n";
      }
      location / {
        return 404;
      }
    }
  }
''
