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
            // PostgreSQL's own array whitespace (array_isspace): ASCII only; anything else is part
            // of an element.
            c if is_array_space(c) => {}
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
                let element = element.trim_end_matches(is_array_space);
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

fn is_array_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\u{0b}' | '\u{0c}')
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

/// Documents nested deeper than this are refused (PostgreSQL takes thousands of levels; a parser
/// that followed them would exhaust its stack).
pub const MAX_JSON_DEPTH: usize = 512;

/// The document `json` after `edit`, everything else kept byte for byte.
///
/// # Errors
/// A message for text that is not JSON, or is nested deeper than [`MAX_JSON_DEPTH`].
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

    /// The string starting here (its raw JSON text, and its value). Escapes are decoded as
    /// PostgreSQL's `json` keeps them: a lone surrogate (`\ud800`) becomes U+FFFD.
    fn string(&mut self) -> Result<(&str, String), String> {
        let start = self.pos;
        let mut value = String::new();
        let mut chars = self.rest().char_indices().skip(1);
        let end = loop {
            match chars.next() {
                Some((i, '"')) => break start + i + 1,
                Some((_, '\\')) => {
                    let escaped = match chars.next().map(|(_, c)| c) {
                        Some('"') => '"',
                        Some('\\') => '\\',
                        Some('/') => '/',
                        Some('b') => '\u{8}',
                        Some('f') => '\u{c}',
                        Some('n') => '\n',
                        Some('r') => '\r',
                        Some('t') => '\t',
                        Some('u') => {
                            let first = hex4(&mut chars)?;
                            if (0xD800..0xDC00).contains(&first) {
                                // A high surrogate: its pair follows as another \u escape, or it is lone.
                                let mut lookahead = chars.clone();
                                let paired = matches!(
                                    (lookahead.next().map(|(_, c)| c), lookahead.next().map(|(_, c)| c)),
                                    (Some('\\'), Some('u'))
                                );
                                if paired {
                                    chars.next();
                                    chars.next();
                                    let second = hex4(&mut chars)?;
                                    if (0xDC00..0xE000).contains(&second) {
                                        char::from_u32(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))
                                            .unwrap_or('\u{FFFD}')
                                    } else {
                                        value.push('\u{FFFD}');
                                        char::from_u32(second).unwrap_or('\u{FFFD}')
                                    }
                                } else {
                                    '\u{FFFD}'
                                }
                            } else {
                                char::from_u32(first).unwrap_or('\u{FFFD}')
                            }
                        }
                        _ => return Err("not JSON: a bad escape in a string".into()),
                    };
                    value.push(escaped);
                }
                Some((_, c)) if u32::from(c) < 0x20 => return Err("not JSON: a control character in a string".into()),
                Some((_, c)) => value.push(c),
                None => return Err("not JSON: a string never ends".into()),
            }
        };
        let raw = &self.text[start..end];
        self.pos = end;
        Ok((raw, value))
    }

    /// A scalar other than a string (a number, `true`, `false`, `null`): its raw text, kept as
    /// written (a number PostgreSQL's `json` keeps, `1e400` among them, is never converted).
    fn scalar(&mut self) -> Result<&str, String> {
        let len = self.rest().find([',', '}', ']', ' ', '\t', '\n', '\r']).unwrap_or(self.rest().len());
        let raw = &self.text[self.pos..self.pos + len];
        if !matches!(raw, "true" | "false" | "null") && !is_json_number(raw) {
            return Err(format!("not JSON at byte {}", self.pos));
        }
        self.pos += len;
        Ok(raw)
    }

    /// Copies or edits the value starting here; `path`: where it is; `live`: whether the path
    /// so far can still lead to the edited one.
    fn value(&mut self, path: &mut Vec<String>, live: bool) -> Result<(), String> {
        if path.len() > MAX_JSON_DEPTH {
            return Err(format!("a JSON document nested deeper than {MAX_JSON_DEPTH} levels"));
        }
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
            let text = if raw.starts_with('"') {
                let mut again =
                    Parser { text: raw, pos: 0, out: String::new(), edit: JsonEdit::Strings(&mut |s| s.to_string()) };
                again.string()?.1
            } else {
                raw.to_string()
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

/// Whether `raw` is a JSON number (`-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`).
fn is_json_number(raw: &str) -> bool {
    let b = raw.as_bytes();
    let mut i = usize::from(b.first() == Some(&b'-'));
    let digits = |i: &mut usize| {
        let start = *i;
        while b.get(*i).is_some_and(u8::is_ascii_digit) {
            *i += 1;
        }
        *i - start
    };
    match b.get(i) {
        Some(b'0') => i += 1,
        Some(c) if c.is_ascii_digit() => {
            digits(&mut i);
        }
        _ => return false,
    }
    if b.get(i) == Some(&b'.') {
        i += 1;
        if digits(&mut i) == 0 {
            return false;
        }
    }
    if matches!(b.get(i), Some(b'e' | b'E')) {
        i += 1;
        if matches!(b.get(i), Some(b'+' | b'-')) {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Four hex digits of a `\u` escape.
fn hex4(chars: &mut impl Iterator<Item = (usize, char)>) -> Result<u32, String> {
    let digits: String = (0..4).filter_map(|_| chars.next().map(|(_, c)| c)).collect();
    u32::from_str_radix(&digits, 16).map_err(|_| "not JSON: a bad \\u escape".to_string())
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
    fn hostile_documents_fail_closed_or_mask_what_postgresql_keeps() {
        let mut mask = |s: &str| format!("<{s}>");
        let deep = format!("{}\"secret\"{}", "[".repeat(12_000), "]".repeat(12_000));
        let err = edit_json(&deep, JsonEdit::Strings(&mut mask)).expect_err("too deep");
        assert!(err.contains("nested deeper than 512"), "{err}");
        let fine = format!("{}\"x\"{}", "[".repeat(100), "]".repeat(100));
        assert!(edit_json(&fine, JsonEdit::Strings(&mut mask)).expect("100 levels").contains("<x>"));
        // Numbers PostgreSQL's json keeps as written, and a lone surrogate it accepts.
        let odd = r#"{"big": 1e400, "n": -0.5e-3, "s": "a\ud800b", "pair": "\ud83d\ude00"}"#;
        let edited = edit_json(odd, JsonEdit::Strings(&mut mask)).expect("json");
        assert!(edited.contains("1e400") && edited.contains("-0.5e-3"), "{edited}");
        assert!(edited.contains("<a\u{FFFD}b>") && edited.contains("<\u{1F600}>"), "{edited}");
        for bad in ["01", "1.", "-", "1e", "tru", "nul"] {
            assert!(edit_json(bad, JsonEdit::Strings(&mut mask)).is_err(), "{bad}");
        }
    }

    #[test]
    fn array_whitespace_is_ascii_as_in_postgresql() {
        let mut upper = |s: &str| s.to_uppercase();
        // U+00A0 and U+3000 are printed unquoted and are part of the element.
        assert_eq!(map_array("{\u{a0}a,\u{3000}b}", &mut upper).expect("array"), "{\"\u{a0}A\",\"\u{3000}B\"}");
        assert_eq!(map_array("{ a , b }", &mut upper).expect("array"), "{\"A\",\"B\"}");
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
