//! The text forms masking reads and writes, handled here rather than by the server's functions
//! (no original value passes through code a dump could have defined):
//! - COPY's text format: a row as tab-separated fields with backslash escapes, `\N` for NULL;
//! - PostgreSQL's array literals (`{a,"b c",NULL}`, nested, with or without a dimension prefix),
//!   masked element by element;
//! - JSON documents, masked string by string (object keys, numbers and layout kept as they are),
//!   or at one path.

/// One COPY text row (without its newline) split into fields, `None` for NULL.
///
/// # Errors
/// A message for a row COPY could not have written.
pub fn copy_fields(row: &[u8]) -> Result<Vec<Option<String>>, String> {
    let row = row.strip_suffix(b"\n").unwrap_or(row);
    row.split(|b| *b == b'\t').map(copy_field).collect()
}

fn copy_field(field: &[u8]) -> Result<Option<String>, String> {
    if field == b"\\N" {
        return Ok(None);
    }
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.iter().copied();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        out.push(match bytes.next() {
            Some(b'b') => 8,
            Some(b'f') => 12,
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'v') => 11,
            Some(other) => other,
            None => return Err("a COPY field ends in a backslash".into()),
        });
    }
    String::from_utf8(out).map(Some).map_err(|_| "a COPY field that is not UTF-8".into())
}

/// Appends `value` as a COPY text field (`\N` for NULL).
pub fn push_copy_field(out: &mut Vec<u8>, value: Option<&str>) {
    let Some(value) = value else {
        out.extend_from_slice(b"\\N");
        return;
    };
    for b in value.bytes() {
        match b {
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            _ => out.push(b),
        }
    }
}

/// An array literal with every non-NULL element replaced by `mask(element)`; its nesting and
/// dimension prefix kept.
///
/// # Errors
/// A message for text that is not an array literal.
pub fn map_array(literal: &str, mask: &mut dyn FnMut(&str) -> String) -> Result<String, String> {
    let bad = || format!("not an array literal ({} characters)", literal.chars().count());
    let (prefix, body) = match literal.find('=') {
        Some(i) if literal.starts_with('[') => literal.split_at(i + 1),
        _ => ("", literal),
    };
    let mut out = String::with_capacity(literal.len() + 16);
    out.push_str(prefix);
    let mut chars = body.chars().peekable();
    let mut depth = 0_usize;
    while let Some(c) = chars.next() {
        match c {
            '{' => {
                depth += 1;
                out.push(c);
            }
            '}' => {
                depth = depth.checked_sub(1).ok_or_else(bad)?;
                out.push(c);
            }
            ',' if depth > 0 => out.push(c),
            c if c.is_whitespace() => {}
            '"' => {
                let mut element = String::new();
                loop {
                    match chars.next().ok_or_else(bad)? {
                        '\\' => element.push(chars.next().ok_or_else(bad)?),
                        '"' => break,
                        other => element.push(other),
                    }
                }
                push_array_element(&mut out, &mask(&element));
            }
            first if depth > 0 => {
                let mut element = String::from(first);
                while let Some(&next) = chars.peek() {
                    if matches!(next, ',' | '}') {
                        break;
                    }
                    element.push(next);
                    chars.next();
                }
                let element = element.trim_end();
                if element.eq_ignore_ascii_case("NULL") {
                    out.push_str("NULL");
                } else {
                    push_array_element(&mut out, &mask(element));
                }
            }
            _ => return Err(bad()),
        }
    }
    if depth != 0 {
        return Err(bad());
    }
    Ok(out)
}

fn push_array_element(out: &mut String, value: &str) {
    out.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
}

/// What to do to the values of a JSON document.
pub enum JsonEdit<'a> {
    /// Every string value (not the keys) becomes `mask(string)`.
    Strings(&'a mut dyn FnMut(&str) -> String),
    /// The value at `path` (object keys, or array indexes as numbers), when present, becomes a
    /// JSON string of `mask(its text)` (a string's own text, or the value's JSON text), or JSON
    /// `null` when `mask` gives `None`.
    At(&'a [String], &'a mut dyn FnMut(&str) -> Option<String>),
}

/// The document `json` after `edit`, everything else kept byte for byte.
///
/// # Errors
/// A message for text that is not JSON.
pub fn edit_json(json: &str, edit: JsonEdit<'_>) -> Result<String, String> {
    let mut parser = Parser { text: json, pos: 0, out: String::with_capacity(json.len() + 16), edit };
    let mut path = Vec::new();
    parser.value(&mut path, true)?;
    parser.space();
    if parser.pos != json.len() {
        return Err("text after the JSON document".into());
    }
    Ok(parser.out)
}

struct Parser<'a, 'e> {
    text: &'a str,
    pos: usize,
    out: String,
    edit: JsonEdit<'e>,
}

impl Parser<'_, '_> {
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn space(&mut self) {
        let skipped = self.rest().len() - self.rest().trim_start_matches([' ', '\t', '\n', '\r']).len();
        self.out.push_str(&self.text[self.pos..self.pos + skipped]);
        self.pos += skipped;
    }

    fn expect(&mut self, c: char) -> Result<(), String> {
        self.space();
        if !self.rest().starts_with(c) {
            return Err(format!("not JSON: expected {c:?} at byte {}", self.pos));
        }
        self.out.push(c);
        self.pos += 1;
        Ok(())
    }

    /// The string starting here (its raw JSON text, and its value).
    fn string(&mut self) -> Result<(&str, String), String> {
        let start = self.pos;
        let mut chars = self.rest().char_indices().skip(1);
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break start + i + 1,
                Some((_, '\\')) => {
                    chars.next();
                }
                Some(_) => {}
                None => return Err("not JSON: a string never ends".into()),
            }
        };
        let raw = &self.text[start..end];
        let value: String = serde_json::from_str(raw).map_err(|e| format!("not JSON: {e}"))?;
        self.pos = end;
        Ok((raw, value))
    }

    /// A scalar other than a string: its raw text.
    fn scalar(&mut self) -> Result<&str, String> {
        let len = self.rest().find([',', '}', ']', ' ', '\t', '\n', '\r']).unwrap_or(self.rest().len());
        let raw = &self.text[self.pos..self.pos + len];
        if raw.is_empty() || serde_json::from_str::<serde_json::Value>(raw).is_err() {
            return Err(format!("not JSON at byte {}", self.pos));
        }
        self.pos += len;
        Ok(raw)
    }

    /// Copies or edits the value starting here; `path`: where it is; `live`: whether the path
    /// so far can still lead to the edited one.
    fn value(&mut self, path: &mut Vec<String>, live: bool) -> Result<(), String> {
        self.space();
        if let JsonEdit::At(target, _) = &self.edit
            && live
            && path.as_slice() == *target
        {
            let start = self.pos;
            let mut skip = Vec::new();
            let saved = std::mem::take(&mut self.out);
            self.value(&mut skip, false)?;
            self.out = saved;
            let raw = &self.text[start..self.pos];
            let text = match serde_json::from_str::<serde_json::Value>(raw) {
                Ok(serde_json::Value::String(s)) => s,
                _ => raw.to_string(),
            };
            let JsonEdit::At(_, mask) = &mut self.edit else { unreachable!("matched above") };
            let replaced = match mask(&text) {
                Some(masked) => serde_json::Value::String(masked).to_string(),
                None => "null".into(),
            };
            self.out.push_str(&replaced);
            return Ok(());
        }
        match self.rest().chars().next() {
            Some('{') => {
                self.expect('{')?;
                self.space();
                if self.rest().starts_with('}') {
                    return self.expect('}');
                }
                loop {
                    self.space();
                    let (raw, key) = self.string()?;
                    let raw = raw.to_string();
                    self.out.push_str(&raw);
                    self.expect(':')?;
                    path.push(key);
                    let under = live && self.leads(path);
                    self.value(path, under)?;
                    path.pop();
                    self.space();
                    if self.rest().starts_with(',') {
                        self.expect(',')?;
                    } else {
                        return self.expect('}');
                    }
                }
            }
            Some('[') => {
                self.expect('[')?;
                self.space();
                if self.rest().starts_with(']') {
                    return self.expect(']');
                }
                let mut index = 0_usize;
                loop {
                    path.push(index.to_string());
                    let under = live && self.leads(path);
                    self.value(path, under)?;
                    path.pop();
                    index += 1;
                    self.space();
                    if self.rest().starts_with(',') {
                        self.expect(',')?;
                    } else {
                        return self.expect(']');
                    }
                }
            }
            Some('"') => {
                let (raw, value) = self.string()?;
                let raw = raw.to_string();
                match &mut self.edit {
                    JsonEdit::Strings(mask) if live => {
                        self.out.push_str(&serde_json::Value::String(mask(&value)).to_string());
                    }
                    _ => self.out.push_str(&raw),
                }
                Ok(())
            }
            Some(_) => {
                let raw = self.scalar()?.to_string();
                self.out.push_str(&raw);
                Ok(())
            }
            None => Err("not JSON: the document ends early".into()),
        }
    }

    /// Whether `path` is on the way to the edited value (always, for string masking).
    fn leads(&self, path: &[String]) -> bool {
        match &self.edit {
            JsonEdit::Strings(_) => true,
            JsonEdit::At(target, _) => target.starts_with(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_rows_split_and_unescape_and_fields_escape_back() {
        let row = b"(0,1)\tit's a\\ttab\\\\ and \\n\t\\N\n";
        let fields = copy_fields(row).expect("row");
        assert_eq!(fields, [Some("(0,1)".into()), Some("it's a\ttab\\ and \n".into()), None]);
        let mut out = Vec::new();
        push_copy_field(&mut out, fields[1].as_deref());
        out.push(b'\t');
        push_copy_field(&mut out, None);
        assert_eq!(out, b"it's a\\ttab\\\\ and \\n\t\\N");
    }

    #[test]
    fn arrays_are_masked_element_by_element_keeping_nulls_and_nesting() {
        let mut upper = |s: &str| s.to_uppercase();
        assert_eq!(map_array(r#"{a,"b c",NULL,"x\"y"}"#, &mut upper).expect("array"), r#"{"A","B C",NULL,"X\"Y"}"#);
        assert_eq!(map_array("{{a,b},{c,d}}", &mut upper).expect("nested"), r#"{{"A","B"},{"C","D"}}"#);
        assert_eq!(map_array("[0:1]={a,b}", &mut upper).expect("bounds"), r#"[0:1]={"A","B"}"#);
        assert_eq!(map_array("{}", &mut upper).expect("empty"), "{}");
        assert!(map_array("{a,b", &mut upper).is_err());
        assert!(map_array("a,b", &mut upper).is_err());
    }

    #[test]
    fn json_strings_are_masked_keys_numbers_and_layout_kept() {
        let doc =
            r#"{"email": "ada@example.com", "n": 12345678901234567890.123, "tags": ["x", {"k": "v"}], "ok": true}"#;
        let mut mask = |s: &str| format!("<{s}>");
        let edited = edit_json(doc, JsonEdit::Strings(&mut mask)).expect("json");
        assert_eq!(
            edited,
            r#"{"email": "<ada@example.com>", "n": 12345678901234567890.123, "tags": ["<x>", {"k": "<v>"}], "ok": true}"#
        );
    }

    #[test]
    fn a_json_path_edits_only_its_value_and_absent_paths_change_nothing() {
        let doc = r#"{"contact": {"email": "a\u0040b.c", "phone": 5551234}, "list": ["p", "q"]}"#;
        let path = |p: &[&str]| p.iter().map(|s| (*s).to_string()).collect::<Vec<_>>();
        let email = path(&["contact", "email"]);
        let mut mask = |s: &str| Some(format!("<{s}>"));
        let edited = edit_json(doc, JsonEdit::At(&email, &mut mask)).expect("json");
        assert_eq!(edited, r#"{"contact": {"email": "<a@b.c>", "phone": 5551234}, "list": ["p", "q"]}"#);
        let phone = path(&["contact", "phone"]);
        let mut mask = |s: &str| Some(format!("<{s}>"));
        assert!(edit_json(doc, JsonEdit::At(&phone, &mut mask)).expect("json").contains(r#""phone": "<5551234>""#));
        let second = path(&["list", "1"]);
        let mut null = |_: &str| None;
        assert!(edit_json(doc, JsonEdit::At(&second, &mut null)).expect("json").ends_with(r#"["p", null]}"#));
        let absent = path(&["nope"]);
        let mut mask = |s: &str| Some(format!("<{s}>"));
        assert_eq!(edit_json(doc, JsonEdit::At(&absent, &mut mask)).expect("json"), doc);
        let mut mask = |s: &str| format!("<{s}>");
        assert!(edit_json("{\"a\": }", JsonEdit::Strings(&mut mask)).is_err());
        assert!(edit_json("[1, 2] x", JsonEdit::Strings(&mut mask)).is_err());
    }
}
