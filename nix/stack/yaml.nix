# A builtins-only YAML renderer for every YAML file the stack writes.
#
# Block style throughout, two-space indentation with sequences indented under their key, and every
# string JSON-quoted (a JSON string is a valid YAML double-quoted scalar), so the output passes
# `yamllint --strict` and no value is ever reinterpreted (`"no"`, `"3.10"`, `"0600"` stay strings).
let
  inherit (builtins)
    attrNames
    concatMap
    concatStringsSep
    head
    isAttrs
    isBool
    isFloat
    isInt
    isList
    isPath
    isString
    match
    tail
    toJSON
    typeOf
    ;

  # YAML 1.1 readers (PyYAML, docker-compose v1) turn these plain keys into booleans or null.
  reserved = [
    "y"
    "n"
    "yes"
    "no"
    "on"
    "off"
    "true"
    "false"
    "null"
  ];

  renderKey =
    key:
    if match "[A-Za-z_][A-Za-z0-9_./-]*" key != null && !(builtins.elem key reserved) then
      key
    else
      toJSON key;

  scalar =
    value:
    if value == null then
      "null"
    else if isBool value then
      (if value then "true" else "false")
    else if isInt value || isFloat value then
      toString value
    else if isString value then
      toJSON value
    else if isPath value then
      toJSON (toString value)
    else
      throw "warpwatch stack: toYAML cannot render a ${typeOf value}";

  isBlock = value: (isAttrs value && value != { }) || (isList value && value != [ ]);

  # The lines of `value` rendered at column 0.
  lines =
    value:
    if isAttrs value && value != { } then
      concatMap (key: entry key value.${key}) (attrNames value)
    else if isList value && value != [ ] then
      concatMap item value
    else if isAttrs value then
      [ "{}" ]
    else if isList value then
      [ "[]" ]
    else
      [ (scalar value) ];

  entry =
    key: value:
    if isBlock value then
      [ "${renderKey key}:" ] ++ map (line: "  " + line) (lines value)
    else
      [ "${renderKey key}: ${head (lines value)}" ];

  item =
    value:
    let
      rendered = lines value;
    in
    [ "- ${head rendered}" ] ++ map (line: "  " + line) (tail rendered);
in
value: concatStringsSep "\n" (lines value) + "\n"
