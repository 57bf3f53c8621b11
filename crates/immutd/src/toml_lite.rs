//! A strict reader for the small TOML subset the configuration uses: `key = value` lines with
//! strings, integers, booleans and arrays of strings (which may span lines), comments,
//! `[[repository]]` table arrays and plain `[approval]` tables. Anything else is an error, so
//! a typo never silently weakens the policy. (A full TOML crate would pull a dozen crates
//! into a root process for a few keys.)

use std::collections::BTreeMap;

/// A value of the subset.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Int(i64),
    Bool(bool),
    /// An array of strings.
    Strs(Vec<String>),
}

/// One table: key → (value, line number).
pub type Table = BTreeMap<String, (Value, usize)>;

/// The parsed document: the top-level table, each `[[name]]` table in order, and each
/// `[name]` table (each name at most once).
#[derive(Debug, Default)]
pub struct Document {
    pub top: Table,
    pub arrays: Vec<(String, Table, usize)>,
    pub tables: Vec<(String, Table, usize)>,
}

/// Where `key = value` lines go.
#[derive(Clone, Copy)]
enum Current {
    Top,
    Array(usize),
    Table(usize),
}

/// Parses `["a", "b",]` (the whole array, comments already removed).
fn parse_strs(s: &str, line: usize) -> Result<Value, String> {
    let inner = s
        .trim()
        .strip_prefix('[')
        .and_then(|r| r.trim_end().strip_suffix(']'))
        .ok_or_else(|| format!("line {line}: malformed array"))?;
    let mut out = Vec::new();
    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        if !rest.starts_with('"') {
            return Err(format!("line {line}: arrays hold only \"strings\""));
        }
        let end = string_end(rest).ok_or_else(|| format!("line {line}: unterminated string"))?;
        match parse_value(&rest[..end], line)? {
            Value::Str(v) => out.push(v),
            _ => return Err(format!("line {line}: arrays hold only \"strings\"")),
        }
        rest = rest[end..].trim_start();
        if let Some(r) = rest.strip_prefix(',') {
            rest = r.trim_start();
        } else if !rest.is_empty() {
            return Err(format!("line {line}: expected `,` between array items"));
        }
    }
    Ok(Value::Strs(out))
}

/// Byte index just past the string that starts `s` (which starts with `"`).
fn string_end(s: &str) -> Option<usize> {
    let mut esc = false;
    for (i, c) in s.char_indices().skip(1) {
        match c {
            _ if esc => esc = false,
            '\\' => esc = true,
            '"' => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// `l` without a `#` comment outside strings.
fn strip_comment(l: &str) -> &str {
    let mut in_str = false;
    let mut esc = false;
    for (i, c) in l.char_indices() {
        match c {
            _ if esc => esc = false,
            '\\' if in_str => esc = true,
            '"' => in_str = !in_str,
            '#' if !in_str => return &l[..i],
            _ => {}
        }
    }
    l
}

/// True when every `[` outside strings in `s` is closed.
fn brackets_closed(s: &str) -> bool {
    let (mut depth, mut in_str, mut esc) = (0i32, false, false);
    for c in s.chars() {
        match c {
            _ if esc => esc = false,
            '\\' if in_str => esc = true,
            '"' => in_str = !in_str,
            '[' if !in_str => depth += 1,
            ']' if !in_str => depth -= 1,
            _ => {}
        }
    }
    depth <= 0 && !in_str
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
    let mut current = Current::Top;
    let lines: Vec<&str> = text.lines().collect();
    let mut i = 0;
    while i < lines.len() {
        let line = i + 1;
        let l = lines[i].trim();
        i += 1;
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
            current = Current::Array(doc.arrays.len() - 1);
            continue;
        }
        if let Some(name) = l.strip_prefix('[') {
            let name = strip_comment(name)
                .trim()
                .strip_suffix(']')
                .ok_or_else(|| format!("line {line}: malformed [table] header"))?
                .trim();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("line {line}: bad table name {name:?}"));
            }
            if doc.tables.iter().any(|t| t.0 == name) {
                return Err(format!("line {line}: table [{name}] given twice"));
            }
            doc.tables.push((name.to_string(), Table::new(), line));
            current = Current::Table(doc.tables.len() - 1);
            continue;
        }
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| format!("line {line}: expected key = value"))?;
        let k = k.trim();
        if k.is_empty() || !k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("line {line}: bad key {k:?}"));
        }
        let v = if v.trim_start().starts_with('[') {
            // An array of strings, possibly over several lines.
            let mut whole = strip_comment(v).to_string();
            while !brackets_closed(&whole) {
                let next = lines
                    .get(i)
                    .ok_or_else(|| format!("line {line}: unterminated array"))?;
                i += 1;
                whole.push(' ');
                whole.push_str(strip_comment(next));
            }
            parse_strs(&whole, line)?
        } else {
            parse_value(v, line)?
        };
        let table = match current {
            Current::Array(n) => &mut doc.arrays[n].1,
            Current::Table(n) => &mut doc.tables[n].1,
            Current::Top => &mut doc.top,
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
    fn parses_tables_and_string_arrays() {
        let d = parse(
            "a = 1\n[approval] # four eyes\nthreshold = 2\napprovers = [\n  \"k1 # not a comment\", # one\n  \"k2\",\n]\none = [\"x\"]\nnone = []\n[[repository]]\npath = \"/r\"\n",
        )
        .unwrap();
        let t = &d.tables[0];
        assert_eq!(t.0, "approval");
        assert_eq!(t.1["threshold"].0, Value::Int(2));
        assert_eq!(
            t.1["approvers"].0,
            Value::Strs(vec!["k1 # not a comment".into(), "k2".into()])
        );
        assert_eq!(t.1["one"].0, Value::Strs(vec!["x".into()]));
        assert_eq!(t.1["none"].0, Value::Strs(vec![]));
        assert_eq!(d.arrays[0].1["path"].0, Value::Str("/r".into()));
        assert_eq!(d.top["a"].0, Value::Int(1));
    }

    #[test]
    fn refuses_what_it_does_not_know() {
        for bad in [
            "a = 1\na = 2",
            "[a b]\na = 1",
            "a = \"open",
            "a = 1.5",
            "a = [1, 2]",
            "a = [\"x\" \"y\"]",
            "a = [\"x\"",
            "[t]\n[t]",
            "[t",
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
