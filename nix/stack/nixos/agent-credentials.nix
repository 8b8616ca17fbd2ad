# An agent unit's LoadCredential= lines: each declared TLS file (agent.certFile, keyFile, caFile)
# under the name ../render/agent-tls.nix gives it in the unit's credentials directory, so the
# rendered configuration and the credentials cannot disagree.
stack: credentialsDir:
let
  declared = import ../render/agent-tls.nix stack null;
  inDirectory = import ../render/agent-tls.nix stack credentialsDir;
in
map (file: "${baseNameOf inDirectory.${file}}:${declared.${file}}") [
  "certFile"
  "keyFile"
  "caFile"
]
