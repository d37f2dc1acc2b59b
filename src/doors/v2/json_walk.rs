//! A strict walk over the objects and arrays of a JSON document that hands out each value's
//! text undecoded, for the caller to decode with serde or the tensor decoder.
//!
//! Why: a JSON infer request is mostly tensor data. serde would read all of it once just to
//! capture it as a raw value, and the tensor decoder would read it again. Walked this way, the
//! data is passed over by a bracket search (memchr) and decoded once.
//!
//! Strictness comes from the split of work: the walk checks the structure it descends into
//! (braces, colons, commas, keys), and every value it hands out is decoded by a strict parser,
//! so nothing that serde would refuse is accepted. Nothing recurses: deep nesting cannot
//! exhaust the stack.

use std::borrow::Cow;

use serde::Deserialize;

pub struct JsonWalk<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> JsonWalk<'a> {
    pub fn new(text: &'a str) -> JsonWalk<'a> {
        JsonWalk { text, at: 0 }
    }

    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn skip_whitespace(&mut self) {
        while matches!(
            self.bytes().get(self.at),
            Some(b' ' | b'\t' | b'\n' | b'\r')
        ) {
            self.at += 1;
        }
    }

    /// The next byte after whitespace, taken.
    fn next_byte(&mut self) -> Option<u8> {
        self.skip_whitespace();
        let b = self.bytes().get(self.at).copied();
        self.at += usize::from(b.is_some());
        b
    }

    fn expected(&self, what: &str) -> String {
        match self.bytes().get(self.at) {
            Some(_) => format!("expected {what} at byte {}", self.at),
            None => format!("expected {what}, found the end of the JSON"),
        }
    }

    /// Takes `byte` (after whitespace), or fails naming `what` was expected there.
    fn expect(&mut self, byte: u8, what: &str) -> Result<(), String> {
        self.skip_whitespace();
        if self.bytes().get(self.at) != Some(&byte) {
            return Err(self.expected(what));
        }
        self.at += 1;
        Ok(())
    }

    /// Walks an object: `each` is called with every key and must take that key's value.
    pub fn object(
        &mut self,
        mut each: impl FnMut(&mut Self, Cow<'a, str>) -> Result<(), String>,
    ) -> Result<(), String> {
        self.items(b'{', b'}', "an object", |w| {
            w.skip_whitespace();
            let key = w.key()?;
            w.expect(b':', "':'")?;
            each(w, key)
        })
    }

    /// Walks an array: `each` is called once per element and must take it.
    pub fn array(
        &mut self,
        each: impl FnMut(&mut Self) -> Result<(), String>,
    ) -> Result<(), String> {
        self.items(b'[', b']', "an array", each)
    }

    /// The comma-separated items between `open` and `close`, each taken by `item`.
    fn items(
        &mut self,
        open: u8,
        close: u8,
        what: &str,
        mut item: impl FnMut(&mut Self) -> Result<(), String>,
    ) -> Result<(), String> {
        self.expect(open, what)?;
        self.skip_whitespace();
        if self.bytes().get(self.at) == Some(&close) {
            self.at += 1;
            return Ok(());
        }
        loop {
            item(self)?;
            match self.next_byte() {
                Some(b',') => {}
                Some(b) if b == close => return Ok(()),
                _ => {
                    self.at = self.at.saturating_sub(1);
                    return Err(self.expected(&format!("',' or '{}'", char::from(close))));
                }
            }
        }
    }

    /// An object key: a string, borrowed where it can be.
    fn key(&mut self) -> Result<Cow<'a, str>, String> {
        if self.bytes().get(self.at) != Some(&b'"') {
            return Err(self.expected("a string key"));
        }
        self.string()
    }

    /// The index after the string whose opening quote is at `start`.
    fn string_end(&self, start: usize) -> Result<usize, String> {
        let bytes = self.bytes();
        let mut i = start + 1;
        loop {
            match memchr::memchr2(b'"', b'\\', &bytes[i..]) {
                Some(n) if bytes[i + n] == b'"' => return Ok(i + n + 1),
                Some(n) => i += n + 2,
                None => return Err(format!("unterminated string from byte {start}")),
            }
            if i > bytes.len() {
                return Err(format!("unterminated string from byte {start}"));
            }
        }
    }

    /// The index after the array or object whose opening bracket is at `start`. Only
    /// `open`, `close` and quotes are looked at: in valid JSON the other kind of bracket
    /// balances inside, and the caller's decoder refuses invalid JSON.
    fn container_end(&self, start: usize, open: u8, close: u8) -> Result<usize, String> {
        let bytes = self.bytes();
        let mut depth = 0usize;
        let mut i = start;
        while let Some(n) = memchr::memchr3(open, close, b'"', &bytes[i..]) {
            i += n;
            match bytes[i] {
                b'"' => {
                    i = self.string_end(i)?;
                    continue;
                }
                b if b == open => depth += 1,
                _ => depth -= 1,
            }
            i += 1;
            if depth == 0 {
                return Ok(i);
            }
        }
        Err(format!("unterminated value from byte {start}"))
    }

    /// The next value's text, passed over without being decoded.
    pub fn raw(&mut self) -> Result<&'a str, String> {
        self.skip_whitespace();
        let start = self.at;
        self.at = match self.bytes().get(start) {
            Some(b'"') => self.string_end(start)?,
            Some(b'[') => self.container_end(start, b'[', b']')?,
            Some(b'{') => self.container_end(start, b'{', b'}')?,
            _ => {
                let len = self.bytes()[start..]
                    .iter()
                    .position(|b| matches!(b, b',' | b']' | b'}' | b' ' | b'\t' | b'\n' | b'\r'))
                    .unwrap_or(self.text.len() - start);
                if len == 0 {
                    return Err(self.expected("a value"));
                }
                start + len
            }
        };
        Ok(&self.text[start..self.at])
    }

    /// Decodes the next value with serde.
    pub fn decode<T: Deserialize<'a>>(&mut self) -> Result<T, String> {
        let raw = self.raw()?;
        serde_json::from_str(raw).map_err(|e| e.to_string())
    }

    /// The next value, a string: borrowed from the text when it has no escapes (nor control
    /// characters, which JSON forbids), else decoded by serde.
    pub fn string(&mut self) -> Result<Cow<'a, str>, String> {
        string_of(self.raw()?)
    }

    /// The next value, a string or null.
    pub fn nullable_string(&mut self) -> Result<Option<Cow<'a, str>>, String> {
        match self.raw()? {
            "null" => Ok(None),
            raw => string_of(raw).map(Some),
        }
    }

    /// The next value, a non-negative integer (plain digits are read here, the rest by serde).
    pub fn u64(&mut self) -> Result<u64, String> {
        let raw = self.raw()?;
        let plain =
            raw.bytes().all(|b| b.is_ascii_digit()) && (raw.len() == 1 || !raw.starts_with('0'));
        match plain {
            true => raw
                .parse()
                .map_err(|_| format!("{raw} does not fit 64 bits")),
            false => serde_json::from_str(raw).map_err(|e| e.to_string()),
        }
    }

    /// Checks that nothing but whitespace follows.
    pub fn finish(mut self) -> Result<(), String> {
        self.skip_whitespace();
        match self.at == self.text.len() {
            true => Ok(()),
            false => Err(self.expected("the end of the JSON")),
        }
    }
}

/// A string value's text (quotes included) as a string; see `JsonWalk::string`.
fn string_of(raw: &str) -> Result<Cow<'_, str>, String> {
    match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) if inner.bytes().all(|b| b != b'\\' && b >= 0x20) => Ok(Cow::Borrowed(inner)),
        _ => serde_json::from_str::<String>(raw)
            .map(Cow::Owned)
            .map_err(|e| e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Walks any document generically, the way a caller would, giving its values' texts.
    fn walk_all(text: &str) -> Result<Vec<String>, String> {
        let mut w = JsonWalk::new(text);
        let mut seen = Vec::new();
        w.object(|w, key| {
            seen.push(format!("{key}={}", w.raw()?));
            Ok(())
        })?;
        w.finish()?;
        Ok(seen)
    }

    #[test]
    fn values_come_out_as_their_text() {
        let text =
            r#" { "a" : [1, [2, "]"], {"x": "}"}] , "b\"q":"s\\",  "c":-1.5e3,"d":{"e":[]} } "#;
        assert_eq!(
            walk_all(text).unwrap(),
            vec![
                r#"a=[1, [2, "]"], {"x": "}"}]"#,
                r#"b"q="s\\""#,
                "c=-1.5e3",
                r#"d={"e":[]}"#
            ]
        );
        assert_eq!(walk_all("{}").unwrap(), Vec::<String>::new());
    }

    #[test]
    fn broken_structure_is_an_error() {
        for text in [
            "",
            "[]",
            "{",
            r#"{"a"}"#,
            r#"{"a":}"#,
            r#"{"a":1,}"#,
            r#"{"a":1 "b":2}"#,
            r#"{"a":[1,2}"#,
            r#"{"a":"x}"#,
            r#"{"a":1} x"#,
            r#"{a:1}"#,
            "{\"a\u{1}\":1}",
        ] {
            assert!(walk_all(text).is_err(), "{text:?}");
        }
    }

    #[test]
    fn escaped_keys_are_decoded() {
        assert_eq!(walk_all(r#"{"na\u006de":1}"#).unwrap(), vec!["name=1"]);
    }

    #[test]
    fn deep_nesting_does_not_recurse() {
        let deep = format!(
            "{{\"a\":{}{}}}",
            "[".repeat(1_000_000),
            "]".repeat(1_000_000)
        );
        assert_eq!(walk_all(&deep).unwrap().len(), 1);
        let mut w = JsonWalk::new(&deep);
        assert!(
            w.object(|w, _| w.decode::<serde::de::IgnoredAny>().map(|_| ()))
                .is_ok(),
            "serde skips a value without recursing"
        );
    }
}
