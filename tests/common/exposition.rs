//! A strict parser for the Prometheus text exposition format (0.0.4), enough to check names,
//! types, labels and values rather than grepping lines.

use std::collections::{BTreeMap, HashMap, HashSet};

#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

#[derive(Debug, Default)]
pub struct Exposition {
    pub samples: Vec<Sample>,
    /// Family name → declared TYPE.
    pub types: HashMap<String, String>,
    pub helps: HashMap<String, String>,
}

impl Exposition {
    /// Parses `text`, panicking with the line number on anything malformed: a sample without a
    /// TYPE'd family, a duplicate series, bad label syntax or value.
    pub fn parse(text: &str) -> Exposition {
        let mut e = Exposition::default();
        let mut seen = HashSet::new();
        for (n, line) in text.lines().enumerate() {
            let n = n + 1;
            if line.is_empty() {
                continue;
            }
            if let Some(rest) = line.strip_prefix("# ") {
                let mut parts = rest.splitn(3, ' ');
                let kind = parts.next().unwrap();
                let name = parts.next().unwrap_or_else(|| panic!("line {n}: {line}"));
                let arg = parts.next().unwrap_or_default().to_owned();
                match kind {
                    "TYPE" => {
                        assert!(
                            ["counter", "gauge", "histogram", "summary", "untyped"]
                                .contains(&arg.as_str()),
                            "line {n}: unknown type {arg}"
                        );
                        assert!(
                            e.types.insert(name.to_owned(), arg).is_none(),
                            "line {n}: second TYPE for {name}"
                        );
                    }
                    "HELP" => {
                        e.helps.insert(name.to_owned(), arg);
                    }
                    _ => {}
                }
                continue;
            }
            let sample = parse_sample(line).unwrap_or_else(|why| panic!("line {n}: {why}: {line}"));
            assert!(
                e.family_of(&sample.name).is_some(),
                "line {n}: no TYPE for {}",
                sample.name
            );
            let key = (sample.name.clone(), sample.labels.clone());
            assert!(
                seen.insert(format!("{key:?}")),
                "line {n}: duplicate series {line}"
            );
            e.samples.push(sample);
        }
        e
    }

    /// The declared family a sample name belongs to (histogram samples carry suffixes).
    pub fn family_of(&self, sample_name: &str) -> Option<&str> {
        if let Some((k, _)) = self.types.get_key_value(sample_name) {
            return Some(k);
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = sample_name.strip_suffix(suffix) {
                if let Some((k, t)) = self.types.get_key_value(base) {
                    if t == "histogram" || t == "summary" {
                        return Some(k);
                    }
                }
            }
        }
        None
    }

    /// Samples named `name` whose labels include all of `labels`.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Vec<&Sample> {
        self.samples
            .iter()
            .filter(|s| {
                s.name == name
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .collect()
    }

    /// The value of the one sample with exactly these labels.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    /// Every (sample name, labels) pair, values ignored: the set of series.
    pub fn series(&self) -> HashSet<String> {
        self.samples
            .iter()
            .map(|s| format!("{}{:?}", s.name, s.labels))
            .collect()
    }
}

fn parse_sample(line: &str) -> Result<Sample, String> {
    let name_end = line.find(['{', ' ']).ok_or("no value")?;
    let name = &line[..name_end];
    if name.is_empty()
        || !name.chars().enumerate().all(|(i, c)| {
            c.is_ascii_alphabetic() || c == '_' || c == ':' || (i > 0 && c.is_ascii_digit())
        })
    {
        return Err(format!("bad metric name {name:?}"));
    }
    let mut labels = BTreeMap::new();
    let mut rest = &line[name_end..];
    if let Some(after) = rest.strip_prefix('{') {
        let mut chars = after.char_indices().peekable();
        let end;
        loop {
            // label name
            let mut lname = String::new();
            while let Some(&(_, c)) = chars.peek() {
                if c == '=' || c == '}' || c == ',' {
                    break;
                }
                lname.push(c);
                chars.next();
            }
            match chars.next() {
                Some((i, '}')) if lname.is_empty() => {
                    end = i;
                    break;
                }
                Some((_, '=')) => {}
                other => return Err(format!("bad label syntax near {other:?}")),
            }
            if !lname.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') || lname.is_empty() {
                return Err(format!("bad label name {lname:?}"));
            }
            if chars.next().map(|(_, c)| c) != Some('"') {
                return Err("label value not quoted".into());
            }
            let mut value = String::new();
            loop {
                match chars.next() {
                    Some((_, '\\')) => match chars.next() {
                        Some((_, 'n')) => value.push('\n'),
                        Some((_, '\\')) => value.push('\\'),
                        Some((_, '"')) => value.push('"'),
                        other => return Err(format!("bad escape {other:?}")),
                    },
                    Some((_, '"')) => break,
                    Some((_, c)) => value.push(c),
                    None => return Err("unterminated label value".into()),
                }
            }
            if labels.insert(lname.clone(), value).is_some() {
                return Err(format!("label {lname} twice"));
            }
            match chars.next() {
                Some((_, ',')) => continue,
                Some((i, '}')) => {
                    end = i;
                    break;
                }
                other => return Err(format!("expected , or }} after a label, got {other:?}")),
            }
        }
        rest = &after[end + 1..];
    }
    let mut fields = rest.split_whitespace();
    let value = fields.next().ok_or("no value")?;
    let value = match value {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        "NaN" => f64::NAN,
        v => v.parse::<f64>().map_err(|_| format!("bad value {v:?}"))?,
    };
    if let Some(ts) = fields.next() {
        ts.parse::<i64>()
            .map_err(|_| format!("bad timestamp {ts:?}"))?;
    }
    if fields.next().is_some() {
        return Err("trailing fields".into());
    }
    Ok(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}
