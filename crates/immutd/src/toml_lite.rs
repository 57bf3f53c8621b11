//! A strict reader for the small TOML subset the configuration uses: `key = value` lines with
//! strings, integers and booleans, comments, and `[[repository]]` table arrays. Anything else
//! is an error, so a typo never silently weakens the policy. (A full TOML crate would pull a
//! dozen crates into a root process for five keys.)

use std::collections::BTreeMap;

/// A value of the subset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
}

/// One table: key → (value, line number).
pub type Table = BTreeMap<String, (Value, usize)>;

/// The parsed document: the top-level table and each `[[name]]` table in order.
#[derive(Debug, Default)]
pub struct Document {
    pub top: Table,
    pub arrays: Vec<(String, Table, usize)>,
}

fn parse_value(s: &str, line: usize) -> Result<Value, String> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('"') {
        let mut out = String::new();
        let mut chars = rest.chars();
        loop {
            match chars.next() {
                None => return Err(format!("line {line}: unterminated string")),
                Some('"') => break,
                Some('\\') => match chars.next() {
                    Some('"') => out.push('"'),
                    Some('\\') => out.push('\\'),
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    _ => return Err(format!("line {line}: unsupported escape in string")),
                },
                Some(c) if c.is_control() => {
                    return Err(format!("line {line}: control character in string"))
                }
                Some(c) => out.push(c),
            }
        }
        let tail = chars.as_str().trim();
        if !(tail.is_empty() || tail.starts_with('#')) {
            return Err(format!("line {line}: unexpected text after the string"));
        }
        return Ok(Value::Str(out));
    }
    let s = s.split('#').next().unwrap_or("").trim();
    match s {
        "true" => return Ok(Value::Bool(true)),
        "false" => return Ok(Value::Bool(false)),
        _ => {}
    }
    let digits: String = s.chars().filter(|&c| c != '_').collect();
    if !digits.is_empty()
        && digits
            .trim_start_matches(['-', '+'])
            .chars()
            .all(|c| c.is_ascii_digit())
        && !s.starts_with('_')
        && !s.ends_with('_')
    {
        return digits
            .parse::<i64>()
            .map(Value::Int)
            .map_err(|_| format!("line {line}: integer out of range"));
    }
    Err(format!(
        "line {line}: expected a \"string\", an integer, true or false, found {s:?}"
    ))
}

/// Parses the subset; errors name the line.
pub fn parse(text: &str) -> Result<Document, String> {
    let mut doc = Document::default();
    let mut current: Option<usize> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if let Some(name) = l.strip_prefix("[[") {
            let name = name
                .split('#')
                .next()
                .and_then(|n| n.trim().strip_suffix("]]"))
                .ok_or_else(|| format!("line {line}: malformed [[table]] header"))?
                .trim();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("line {line}: bad table name {name:?}"));
            }
            doc.arrays.push((name.to_string(), Table::new(), line));
            current = Some(doc.arrays.len() - 1);
            continue;
        }
        if l.starts_with('[') {
            return Err(format!(
                "line {line}: only [[repository]] tables are supported"
            ));
        }
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| format!("line {line}: expected key = value"))?;
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("line {line}: bad key {k:?}"));
        }
        let v = parse_value(v, line)?;
        let table = match current {
            Some(n) => &mut doc.arrays[n].1,
            None => &mut doc.top,
        };
        if table.insert(k.to_string(), (v, line)).is_some() {
            return Err(format!("line {line}: key {k:?} given twice"));
        }
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_subset() {
        let d = parse(
            "# c\nservice_user = \"bulwark\" # x\nmax_locked_bytes = 1_000\nlock = true\n\n[[repository]]\npath = \"/a\\\\b\"\nmin_period_days = 7\n[[repository]]\npath=\"/c\"\n",
        )
        .unwrap();
        assert_eq!(d.top["service_user"].0, Value::Str("bulwark".into()));
        assert_eq!(d.top["max_locked_bytes"].0, Value::Int(1000));
        assert_eq!(d.top["lock"].0, Value::Bool(true));
        assert_eq!(d.arrays.len(), 2);
        assert_eq!(d.arrays[0].1["path"].0, Value::Str("/a\\b".into()));
        assert_eq!(d.arrays[1].1["path"].0, Value::Str("/c".into()));
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        for bad in [
            "a = 1\na = 2",
            "[server]\na = 1",
            "a = \"open",
            "a = 1.5",
            "a = [1, 2]",
            "a = \"x\" y",
            "= 3",
            "a b = 3",
            "a = 99999999999999999999",
            "[[repo]",
            "a = _1",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
