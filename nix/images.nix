# One streamed, layered OCI image per service. Every value (name, tag, user, ports, healthcheck,
# labels, directories) comes from ./stack/image-specs.nix; this file only calls dockerTools.
{
  lib,
  dockerTools,
  fakeNss,
  # ./stack/image-specs.nix evaluated with these packages' versions and paths.
  specs,
  # { <service> = derivation; } with the same keys as specs.images.
  servicePackages,
}:
lib.mapAttrs (
  _service: spec:
  dockerTools.streamLayeredImage {
    inherit (spec)
      name
      tag
      config
      created
      mtime
      fakeRootCommands
      ;
    contents = map (key: servicePackages.${key}) spec.contents ++ [
      dockerTools.caCertificates
      # /etc/passwd and /etc/group naming the service's uid, so tools that look the user up work.
      (fakeNss.override {
        extraPasswdLines = spec.passwd;
        extraGroupLines = spec.group;
      })
    ];
    passthru = {
      inherit (spec) ref;
    };
  }
) specs.images
