//! The module layering that `src/lib.rs` documents holds in the code: every `crate::` reference
//! in a module names a module of a strictly lower layer, so there are no import cycles and no
//! lower layer knows the server or the command line.

use std::collections::BTreeMap;
use std::path::Path;

/// Module name → layer number, read from the "| N name | `[`a`]`, ... |" rows of the table in
/// src/lib.rs's docs (the one place the layering is written down).
fn documented_layers(lib: &str) -> BTreeMap<String, u32> {
    let mut layers = BTreeMap::new();
    for row in lib.lines().filter_map(|l| l.strip_prefix("//! | ")) {
        let mut cells = row.split(" | ");
        let (Some(layer), Some(modules)) = (cells.next(), cells.next()) else {
            continue;
        };
        let Some(Ok(n)) = layer.split_whitespace().next().map(str::parse::<u32>) else {
            continue;
        };
        for m in modules.split(',') {
            let name = m.trim().trim_matches(|c| c == '[' || c == ']' || c == '`');
            layers.insert(name.to_owned(), n);
        }
    }
    layers
}

/// Modules `source` refers to through `crate::` paths or `use crate::{...}` groups, comments
/// excluded.
fn references(source: &str, known: &BTreeMap<String, u32>) -> Vec<String> {
    let code: String = source
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n");
    let mut found = Vec::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            let group = &group[..group.find('}').unwrap_or(group.len())];
            group
                .split(',')
                .map(|item| item.trim().split("::").next().unwrap_or_default())
                .collect()
        } else {
            vec![
                rest.split(|c: char| !c.is_alphanumeric() && c != '_')
                    .next()
                    .unwrap_or_default(),
            ]
        };
        found.extend(
            names
                .into_iter()
                .filter(|n| known.contains_key(*n))
                .map(str::to_owned),
        );
    }
    found
}

#[test]
fn modules_import_only_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let layers = documented_layers(&lib);
    assert!(
        layers.len() >= 10,
        "the layer table in src/lib.rs lists too few modules: {layers:?}"
    );
    // Every module the library declares is in the table.
    for line in lib.lines() {
        if let Some(m) = line
            .strip_prefix("pub mod ")
            .and_then(|l| l.strip_suffix(';'))
        {
            assert!(
                layers.contains_key(m),
                "module {m} is missing from the layer table in src/lib.rs"
            );
        }
    }
    let mut violations = Vec::new();
    for (module, layer) in &layers {
        let source = std::fs::read_to_string(src.join(format!("{module}.rs")))
            .unwrap_or_else(|e| panic!("src/{module}.rs: {e}"));
        for dep in references(&source, &layers) {
            if layers[&dep] >= *layer && dep != *module {
                violations.push(format!(
                    "{module} (layer {layer}) uses {dep} (layer {})",
                    layers[&dep]
                ));
            }
        }
    }
    assert!(
        violations.is_empty(),
        "layering broken:\n{}",
        violations.join("\n")
    );
}

#[test]
fn the_checker_sees_imports() {
    let layers: BTreeMap<String, u32> = [("a", 0), ("b", 1)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
    let src = "use crate::{a::X, b};\n// crate::b in a comment\nfn f() { crate::a::g(); }";
    assert_eq!(references(src, &layers), ["a", "b", "a"]);
}
