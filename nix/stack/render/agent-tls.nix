# Where an agent's collectors read their TLS files: the declared locations, or the same names
# in one directory (the compose mount, a NixOS unit's credentials directory).
stack: tlsDir:
if tlsDir == null then
  {
    inherit (stack.agent) certFile keyFile caFile;
  }
else
  {
    certFile = "${tlsDir}/client.crt";
    keyFile = "${tlsDir}/client.key";
    caFile = "${tlsDir}/ca.crt";
  }
