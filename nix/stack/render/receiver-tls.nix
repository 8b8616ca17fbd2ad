# The receiver's TLS files: each declared field of `receiver` with the name it has in one
# directory (the compose secrets, the NixOS unit's credentials directory), where ./nginx.nix
# then reads it. The CRL is there only when declared: without it nginx checks no revocation.
stack:
let
  inherit (stack) receiver;
  entry = field: name: {
    inherit field name;
    file = receiver.${field};
  };
in
[
  (entry "certFile" "server.crt")
  (entry "keyFile" "server.key")
  (entry "clientCaFile" "client-ca.crt")
]
++ (if receiver.crlFile == null then [ ] else [ (entry "crlFile" "client-ca.crl") ])
