# The rules of many hosts (`role`, `hosts`, `receiver`, `agent`): a list of messages, each naming
# the field and the fix, as the rest of ./validate.nix does.
{
  show,
  secretFile,
  hostsFieldPrefix ? "",
}:
stack:
let
  inherit (builtins)
    concatMap
    concatStringsSep
    elem
    filter
    isInt
    isList
    isPath
    isString
    length
    match
    ;
  inherit (stack)
    role
    hosts
    receiver
    agent
    ;
  inherit (import ./lib.nix) hostNamePattern serverAddressPattern;
  check = ok: message: if ok then [ ] else [ message ];
  # A field as the user set it (the declaration's name, or nix/module.nix's option path).
  f = field: hostsFieldPrefix + field;

  # Certificates are public, but a Nix path would still tie the file's lifetime to the store;
  # like the key, they are named by a string and read at run time.
  fileRule =
    field: example: value:
    if value == null then
      [ "${field} is not set: give the file's location as a string, e.g. ${field} = \"${example}\"" ]
    else if isPath value then
      [
        "${field} is ${show value}: give the file's location as a string instead, e.g. ${field} = \"${toString value}\""
      ]
    else
      check (
        isString value && match "/.*" value != null
      ) "${field} must be an absolute path string (got ${show value})";

  keyRule =
    field: value:
    if value == null then
      [
        "${field} is not set: give the private key's location as a string, e.g. ${field} = \"/run/keys/warpwatch/client.key\""
      ]
    else
      secretFile field value;

  nameRule =
    field: value:
    check (
      isString value && match hostNamePattern value != null
    ) "${field} must be a host name of lower-case letters, digits, ., - or _ (got ${show value})";

  expectedRules =
    if hosts.expected == null then
      [ ]
    else if !(isList hosts.expected) then
      [ "${f "hosts.expected"} must be a list of host names (got ${show hosts.expected})" ]
    else
      concatMap (nameRule (f "hosts.expected")) hosts.expected
      ++ (
        let
          duplicates = filter (
            name: length (filter (other: other == name) hosts.expected) > 1
          ) hosts.expected;
        in
        check (duplicates == [ ])
          "${f "hosts.expected"} names ${show (builtins.head duplicates)} more than once: every host needs a name of its own (it is the `host` label that tells their series apart)"
      );

  serverRules =
    fileRule (f "receiver.certFile") "/etc/warpwatch/tls/server.crt" receiver.certFile
    ++ keyRule (f "receiver.keyFile") receiver.keyFile
    ++ fileRule (f "receiver.clientCaFile") "/etc/warpwatch/tls/ca.crt" receiver.clientCaFile
    ++ (
      if receiver.crlFile == null then
        [ ]
      else
        fileRule (f "receiver.crlFile") "/etc/warpwatch/tls/ca.crl" receiver.crlFile
    )
    ++ check (
      isInt receiver.port && receiver.port >= 1 && receiver.port <= 65535
    ) "${f "receiver.port"} must be a port number between 1 and 65535 (got ${show receiver.port})"
    ++ check (
      !(elem receiver.port (map (s: s.port) (builtins.attrValues stack.services)))
    ) "${f "receiver.port"} ${show receiver.port} is a service's port too: pick another"
    ++
      check (isString receiver.bindAddress && receiver.bindAddress != "")
        "${f "receiver.bindAddress"} must be an address such as \"0.0.0.0\" (got ${show receiver.bindAddress})";

  agentRules =
    (
      if hosts.name == null then
        [
          "${f "hosts.name"} is not set: an agent needs its host name, e.g. ${f "hosts.name"} = \"app1\" (the `host` label of everything it sends)"
        ]
      else
        nameRule (f "hosts.name") hosts.name
    )
    ++ (
      if agent.serverAddress == null then
        [
          "${f "agent.serverAddress"} is not set: give the server's receiver as host:port, e.g. ${f "agent.serverAddress"} = \"monitor.example.org:${toString receiver.port}\""
        ]
      else
        check (isString agent.serverAddress && match serverAddressPattern agent.serverAddress != null)
          "${f "agent.serverAddress"} must be host:port, e.g. \"monitor.example.org:${toString receiver.port}\" (got ${show agent.serverAddress})"
    )
    ++ fileRule (f "agent.certFile") "/etc/warpwatch/tls/client.crt" agent.certFile
    ++ keyRule (f "agent.keyFile") agent.keyFile
    ++ fileRule (f "agent.caFile") "/etc/warpwatch/tls/ca.crt" agent.caFile;
in
if
  !(elem role [
    "server"
    "agent"
  ])
then
  [ "${f "role"} must be \"server\" or \"agent\" (got ${show role})" ]
else
  check (
    isInt hosts.silentForSeconds && hosts.silentForSeconds > 0
  ) "${f "hosts.silentForSeconds"} must be a positive integer (got ${show hosts.silentForSeconds})"
  ++ (if hosts.name != null && role == "server" then nameRule (f "hosts.name") hosts.name else [ ])
  ++ expectedRules
  ++ (if role == "agent" then agentRules else [ ])
  ++ (if role == "server" && receiver.enable then serverRules else [ ])
