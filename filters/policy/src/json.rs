//! JSON decoding shared by every filter config: size bound, version check,
//! typed decoding with the path of the failing field, duplicate-key checks.
//!
//! A small hand-written reader rather than serde: the filters ship as wasm,
//! and serde's derived decoders, `serde_json` and `serde_path_to_error`
//! were over 100 KB of each module (docs/policy.md, "Module size"). The
//! reader follows `serde_json`'s grammar and messages (RFC 8259, recursion
//! limit 128, `line L column C` positions, `unknown field`, `missing field`,
//! `invalid type`, `invalid value`), and the config types keep their serde
//! derives for `xds-ext` and for the tests that check both decoders agree.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{quote, ConfigError, Failed, Path};

/// The only config version these filters understand.
pub const CONFIG_VERSION: u64 = 1;

/// Configs are a few hundred bytes per rule; a document this large is a
/// mistake or an attack, and refusing it keeps `on_configure` fast.
pub const MAX_CONFIG_BYTES: usize = 4 << 20;

/// Nesting deeper than this is refused (`serde_json`'s limit), so no input
/// can exhaust the stack.
const RECURSION_LIMIT: u32 = 128;

/// Decodes a filter config: refuses oversized input, then checks `version`
/// before anything else (so a future config gets "unsupported version", not
/// "unknown field"), then decodes the typed config.
pub(crate) fn decode<T: Decode>(bytes: &[u8]) -> Result<T, ConfigError> {
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(ConfigError::new(
            "",
            format!("config is {} bytes, over the {MAX_CONFIG_BYTES}-byte limit", bytes.len()),
        ));
    }
    let first = bytes.iter().find(|b| !b.is_ascii_whitespace());
    if first.is_some_and(|&b| b != b'{') {
        return Err(ConfigError::new("", "a config must be a JSON object"));
    }
    check_version(bytes).map_err(|e| *e)?;
    let mut d = Decoder::new(bytes);
    let mut config = T::blank();
    config.decode_into(&mut d, &Path::Root).map_err(|e| *e)?;
    if d.peek().is_some() {
        return Err(*d.syntax(&Path::Root, "trailing characters"));
    }
    Ok(config)
}

/// A first pass over the whole document that reads only `version` and
/// checks the syntax of everything else. Syntax errors found here name the
/// top-level field they are in.
fn check_version(bytes: &[u8]) -> Result<(), Failed> {
    let mut d = Decoder::new(bytes);
    // None: absent (or null); Some(Err(text)): not 1.
    let mut version: Option<Result<(), &[u8]>> = None;
    let mut seen = false;
    let mut object = d.begin(&Path::Root, b'{')?;
    while let Some(key) = d.next_member(&Path::Root, &mut object)? {
        let at = Path::Field(&Path::Root, &key);
        if key != "version" {
            d.skip_value(&at)?;
            continue;
        }
        if seen {
            return Err(d.error(&Path::Root, "duplicate field `version`".into()));
        }
        seen = true;
        let start = d.skip_ws();
        let is_one = match d.peek() {
            // `null` counts as absent, as for any optional field.
            Some(b'n') => {
                d.skip_value(&at)?;
                continue;
            }
            Some(b'-' | b'0'..=b'9') => {
                let number = d.number(&at)?;
                if !number.integer {
                    number.to_f64(&d, &at)?;
                }
                number.integer && number.text == "1"
            }
            _ => {
                d.skip_value(&at)?;
                false
            }
        };
        version = Some(if is_one { Ok(()) } else { Err(d.src.get(start..d.pos).unwrap_or(b"")) });
    }
    match version {
        None => Err(Box::new(ConfigError::new(
            "version",
            format!("missing config version (this filter understands {CONFIG_VERSION})"),
        ))),
        Some(Ok(())) => Ok(()),
        Some(Err(text)) => Err(Box::new(ConfigError::new(
            "version",
            format!(
                "unsupported config version {} (this filter understands {CONFIG_VERSION})",
                std::str::from_utf8(text).unwrap_or("?")
            ),
        ))),
    }
}

/// A value the typed pass can read, decoded in place: a struct decodes
/// each field into its own slot, so the moves and drops of a field type
/// exist once per type rather than once per field.
pub(crate) trait Decode {
    /// The value before decoding (also what an absent `default` field keeps).
    fn blank() -> Self;
    fn decode_into(&mut self, d: &mut Decoder<'_>, at: &Path<'_>) -> Result<(), Failed>;
}

/// A struct's fields by index (implemented by `decode_struct!`). The loop
/// over an object's members is `Decoder::fields`, compiled once; each
/// struct only dispatches to its fields.
pub(crate) trait Fields {
    fn decode_field(&mut self, index: usize, d: &mut Decoder<'_>, at: &Path<'_>) -> Result<(), Failed>;
}

/// A list decoded element by element (`Vec<T>`), for `Decoder::elements`.
trait Elements {
    fn decode_element(&mut self, d: &mut Decoder<'_>, at: &Path<'_>) -> Result<(), Failed>;
}

/// A map with user-chosen keys (`KeyedList<V>`), for `Decoder::entries`.
trait Entries {
    fn decode_entry(&mut self, key: String, d: &mut Decoder<'_>, at: &Path<'_>) -> Result<(), Failed>;
}

/// A number as written: its text, and whether it has the integer form
/// (no fraction, no exponent).
struct Number<'a> {
    text: &'a str,
    integer: bool,
}

impl Number<'_> {
    fn to_f64(&self, d: &Decoder<'_>, at: &Path<'_>) -> Result<f64, Failed> {
        parse_f64(self.text).ok_or_else(|| d.error(at, "number out of range".into()))
    }

    /// The value as an unsigned integer, or what serde would call it when it
    /// is not one: `integer `-1`` (negative) or `floating point `1.5``.
    fn to_u64(&self) -> Result<u64, (&'static str, &str)> {
        if self.integer {
            if let Some(digits) = self.text.strip_prefix('-') {
                // serde_json reads `-0` and values below i64::MIN as floats.
                let fits_i64 = digits.len() < 19 || (digits.len() == 19 && digits <= "9223372036854775808");
                let kind = if fits_i64 && digits.bytes().any(|b| b != b'0') { "integer" } else { "floating point" };
                return Err((kind, self.text));
            }
            let mut value: u64 = 0;
            for b in self.text.bytes() {
                match value.checked_mul(10).and_then(|v| v.checked_add(u64::from(b - b'0'))) {
                    Some(v) => value = v,
                    None => return Err(("floating point", self.text)),
                }
            }
            return Ok(value);
        }
        Err(("floating point", self.text))
    }
}

/// The value of a JSON number (already checked against the grammar), or
/// `None` when it overflows `f64`.
///
/// Not `str::parse`: core's float parser and its tables cost about 15 KB of
/// every module. Up to 19 significant digits are kept (further digits are
/// truncated). A significand below 2^53 with a decimal exponent within ±22
/// (every percentage a person writes: `10`, `0.5`, `99.99`) takes Clinger's
/// fast path, one exactly rounded multiplication or division, so the result
/// is the correctly rounded value, the same as `str::parse`. Other numbers
/// are scaled in steps of 10^22 and may be off by a few units in the last
/// place (as `serde_json` without `float_roundtrip`).
pub(crate) fn parse_f64(text: &str) -> Option<f64> {
    let (negative, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (significand, exponent) = match text.find(['e', 'E']) {
        Some(at) => (text.get(..at).unwrap_or(""), text.get(at + 1..).unwrap_or("")),
        None => (text, ""),
    };
    let mut mantissa: u64 = 0;
    let mut exp10: i64 = 0;
    let mut in_fraction = false;
    for b in significand.bytes() {
        if b == b'.' {
            in_fraction = true;
        } else if mantissa < 1_000_000_000_000_000_000 {
            mantissa = mantissa * 10 + u64::from(b - b'0');
            exp10 -= i64::from(in_fraction);
        } else {
            exp10 += i64::from(!in_fraction);
        }
    }
    let (exp_negative, exp_digits) = match exponent.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, exponent.strip_prefix('+').unwrap_or(exponent)),
    };
    let mut written: i64 = 0;
    for b in exp_digits.bytes() {
        written = (written * 10 + i64::from(b - b'0')).min(1_000_000);
    }
    exp10 += if exp_negative { -written } else { written };
    // `100.000` and `1e2` alike: trailing zeros move to the exponent, so
    // more numbers take the exact path.
    while mantissa != 0 && mantissa.is_multiple_of(10) {
        mantissa /= 10;
        exp10 += 1;
    }
    let pow10 = |n: i64| (0..n).fold(1.0f64, |p, _| p * 10.0);
    let mut value = mantissa as f64;
    while exp10 > 0 && value != 0.0 && value.is_finite() {
        let step = exp10.min(22);
        value *= pow10(step);
        exp10 -= step;
    }
    while exp10 < 0 && value != 0.0 {
        let step = (-exp10).min(22);
        value /= pow10(step);
        exp10 += step;
    }
    if !value.is_finite() {
        return None;
    }
    Some(if negative { -value } else { value })
}

/// An array or object being read: items so far, and (structs) which
/// fields were present (bit i for field i).
pub(crate) struct Container {
    count: usize,
    seen: u64,
}

/// `a`, `b` joined as serde lists names: "`a`, `b`".
fn backquoted(names: &[&str], separator: &str) -> String {
    let mut out = String::new();
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.push_str(separator);
        }
        out.push('`');
        out.push_str(name);
        out.push('`');
    }
    out
}

/// A cursor over the document. Every method leaves the cursor after what it
/// read; errors carry the path and serde_json's `line L column C`.
pub(crate) struct Decoder<'a> {
    src: &'a [u8],
    pos: usize,
    remaining_depth: u32,
}

impl<'a> Decoder<'a> {
    fn new(src: &'a [u8]) -> Self {
        Decoder { src, pos: 0, remaining_depth: RECURSION_LIMIT }
    }

    /// An error at byte `index`: `message at line L column C`.
    fn error_at(&self, at: &Path<'_>, message: &str, index: usize) -> Failed {
        let before = self.src.get(..index.min(self.src.len())).unwrap_or(b"");
        let line_start = before.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let line = 1 + before.iter().filter(|&&b| b == b'\n').count();
        let column = before.len() - line_start;
        at.error(format!("{message} at line {line} column {column}"))
    }

    /// An error about what was just read.
    pub(crate) fn error(&self, at: &Path<'_>, message: String) -> Failed {
        self.error_at(at, &message, self.pos)
    }

    /// An error about the byte at the cursor (serde_json's `peek_error`).
    fn syntax(&self, at: &Path<'_>, message: &str) -> Failed {
        self.error_at(at, message, self.pos + 1)
    }

    fn skip_ws(&mut self) -> usize {
        while let Some(b' ' | b'\n' | b'\t' | b'\r') = self.src.get(self.pos) {
            self.pos += 1;
        }
        self.pos
    }

    /// The next byte that is not whitespace, not consumed.
    fn peek(&mut self) -> Option<u8> {
        self.skip_ws();
        self.src.get(self.pos).copied()
    }

    /// Opens an object (`open` = `{`) or array (`[`): the cursor must be
    /// on it, else the value is of the wrong type.
    pub(crate) fn begin(&mut self, at: &Path<'_>, open: u8) -> Result<Container, Failed> {
        if self.peek() != Some(open) {
            return Err(self.invalid_type(at, if open == b'{' { "an object" } else { "a sequence" }));
        }
        self.remaining_depth -= 1;
        if self.remaining_depth == 0 {
            return Err(self.syntax(at, "recursion limit exceeded"));
        }
        self.pos += 1;
        Ok(Container { count: 0, seen: 0 })
    }

    /// Whether another element follows in an array opened with `begin`
    /// (the cursor is then on it); `false` after the closing `]`.
    pub(crate) fn next_element(&mut self, at: &Path<'_>, array: &mut Container) -> Result<bool, Failed> {
        self.next_item(at, array, b']')
    }

    /// The next key of an object opened with `begin`, unescaped, with the
    /// cursor on its value; `None` after the closing `}`.
    pub(crate) fn next_member(
        &mut self,
        at: &Path<'_>,
        object: &mut Container,
    ) -> Result<Option<Cow<'a, str>>, Failed> {
        if !self.next_item(at, object, b'}')? {
            return Ok(None);
        }
        match self.peek() {
            Some(b'"') => {}
            None => return Err(self.syntax(at, "EOF while parsing a value")),
            Some(_) => return Err(self.syntax(at, "key must be a string")),
        }
        let key = self.string(at)?;
        match self.peek() {
            Some(b':') => self.pos += 1,
            None => return Err(self.syntax(at, "EOF while parsing an object")),
            Some(_) => return Err(self.syntax(at, "expected `:`")),
        }
        Ok(Some(key))
    }

    /// Separators and the end of an array or object, as `serde_json` reads them.
    fn next_item(&mut self, at: &Path<'_>, container: &mut Container, close: u8) -> Result<bool, Failed> {
        let first = container.count == 0;
        match self.peek() {
            Some(b) if b == close => {
                self.pos += 1;
                self.remaining_depth += 1;
                return Ok(false);
            }
            Some(b',') if !first => {
                self.pos += 1;
                if self.peek() == Some(close) {
                    return Err(self.syntax(at, "trailing comma"));
                }
            }
            None if close == b']' => return Err(self.syntax(at, "EOF while parsing a list")),
            None => return Err(self.syntax(at, "EOF while parsing an object")),
            Some(_) if !first => {
                return Err(self.syntax(at, if close == b']' { "expected `,` or `]`" } else { "expected `,` or `}`" }))
            }
            Some(_) => {}
        }
        container.count += 1;
        Ok(true)
    }

    /// The next field of a struct (an object opened with `begin`): its
    /// index in `fields` and name. Unknown and repeated fields are errors,
    /// like serde's `deny_unknown_fields`.
    pub(crate) fn next_field(
        &mut self,
        at: &Path<'_>,
        object: &mut Container,
        fields: &'static [&'static str],
    ) -> Result<Option<(usize, &'static str)>, Failed> {
        let Some(key) = self.next_member(at, object)? else {
            return Ok(None);
        };
        let Some((index, name)) = fields.iter().enumerate().find(|(_, f)| **f == key) else {
            return Err(self.error(
                &Path::Field(at, &key),
                format!("unknown field `{key}`, expected one of {}", backquoted(fields, ", ")),
            ));
        };
        if object.seen & (1 << index) != 0 {
            return Err(self.error(at, format!("duplicate field `{key}`")));
        }
        object.seen |= 1 << index;
        Ok(Some((index, name)))
    }

    /// A struct: its fields in any order, each at most once, no others,
    /// and every `required` one present (serde's `deny_unknown_fields`).
    pub(crate) fn fields(
        &mut self,
        at: &Path<'_>,
        names: &'static [&'static str],
        required: &[bool],
        out: &mut dyn Fields,
    ) -> Result<(), Failed> {
        let mut object = self.begin(at, b'{')?;
        while let Some((index, name)) = self.next_field(at, &mut object, names)? {
            out.decode_field(index, self, &Path::Field(at, name))?;
        }
        self.finish(at, &object, names, required)
    }

    fn elements(&mut self, at: &Path<'_>, out: &mut dyn Elements) -> Result<(), Failed> {
        let mut array = self.begin(at, b'[')?;
        while self.next_element(at, &mut array)? {
            out.decode_element(self, &Path::Index(at, array.count - 1))?;
        }
        Ok(())
    }

    /// An object with user-chosen keys; a repeated key is an error.
    fn entries(&mut self, at: &Path<'_>, out: &mut dyn Entries) -> Result<(), Failed> {
        let mut seen: HashMap<String, usize> = HashMap::new();
        let mut object = self.begin(at, b'{')?;
        while let Some(key) = self.next_member(at, &mut object)? {
            let key = key.into_owned();
            if seen.insert(key.clone(), object.count).is_some() {
                return Err(self.error(at, format!("duplicate key {}", quote(&key))));
            }
            out.decode_entry(key, self, at)?;
        }
        Ok(())
    }

    /// After a struct's last field: the first required field that was
    /// absent is an error (`missing field`), as with serde.
    pub(crate) fn finish(
        &self,
        at: &Path<'_>,
        object: &Container,
        fields: &[&str],
        required: &[bool],
    ) -> Result<(), Failed> {
        for (index, (field, required)) in fields.iter().zip(required).enumerate() {
            if *required && object.seen & (1 << index) == 0 {
                return Err(self.error(at, format!("missing field `{field}`")));
            }
        }
        Ok(())
    }

    /// Consumes a `null` if one is next.
    pub(crate) fn null(&mut self, at: &Path<'_>) -> Result<bool, Failed> {
        if self.peek() == Some(b'n') {
            self.literal(at, b"null")?;
            return Ok(true);
        }
        Ok(false)
    }

    pub(crate) fn string_value(&mut self, at: &Path<'_>) -> Result<String, Failed> {
        if self.peek() != Some(b'"') {
            return Err(self.invalid_type(at, "a string"));
        }
        Ok(self.string(at)?.into_owned())
    }

    /// An unsigned integer no larger than `max` (`expected` names the type).
    pub(crate) fn unsigned(&mut self, at: &Path<'_>, max: u64, expected: &str) -> Result<u64, Failed> {
        if !matches!(self.peek(), Some(b'-' | b'0'..=b'9')) {
            return Err(self.invalid_type(at, expected));
        }
        match self.number(at)?.to_u64() {
            Ok(value) if value <= max => Ok(value),
            Ok(value) => Err(self.error(at, format!("invalid value: integer `{value}`, expected {expected}"))),
            Err(("integer", text)) => {
                Err(self.error(at, format!("invalid value: integer `{text}`, expected {expected}")))
            }
            Err((kind, text)) => Err(self.error(at, format!("invalid type: {kind} `{text}`, expected {expected}"))),
        }
    }

    pub(crate) fn float(&mut self, at: &Path<'_>) -> Result<f64, Failed> {
        if !matches!(self.peek(), Some(b'-' | b'0'..=b'9')) {
            return Err(self.invalid_type(at, "f64"));
        }
        let number = self.number(at)?;
        number.to_f64(self, at)
    }

    pub(crate) fn boolean(&mut self, at: &Path<'_>) -> Result<bool, Failed> {
        match self.peek() {
            Some(b't') => self.literal(at, b"true").map(|()| true),
            Some(b'f') => self.literal(at, b"false").map(|()| false),
            _ => Err(self.invalid_type(at, "a boolean")),
        }
    }

    /// An enum as serde writes it, from `variants`: an object with exactly
    /// one key, the variant, with the cursor left on its value (returned as
    /// `Some(object)`: call `end_variant` after reading the value); or, when
    /// `unit`, also a plain string (`None`), and then the object form's value
    /// must be `null`.
    pub(crate) fn variant(
        &mut self,
        at: &Path<'_>,
        variants: &'static [&'static str],
        unit: bool,
    ) -> Result<(usize, Option<Container>), Failed> {
        let one_of = || format!("one of {}", backquoted(variants, ", "));
        if unit && self.peek() == Some(b'"') {
            let name = self.string(at)?;
            let Some(index) = variants.iter().position(|v| *v == name) else {
                return Err(self.error(at, format!("unknown variant `{name}`, expected {}", one_of())));
            };
            return Ok((index, None));
        }
        if self.peek() != Some(b'{') {
            return Err(self.invalid_type(at, &one_of()));
        }
        let mut object = self.begin(at, b'{')?;
        let Some((index, name)) = self.next_field(at, &mut object, variants)? else {
            return Err(self.error(at, format!("expected {}", one_of())));
        };
        if unit && !self.null(&Path::Field(at, name))? {
            return Err(self.invalid_type(&Path::Field(at, name), "null"));
        }
        Ok((index, Some(object)))
    }

    /// After the value of `variant`'s object form: no second key may follow.
    pub(crate) fn end_variant(
        &mut self,
        at: &Path<'_>,
        variants: &'static [&'static str],
        object: Option<Container>,
    ) -> Result<(), Failed> {
        let Some(mut object) = object else {
            return Ok(());
        };
        if self.next_member(at, &mut object)?.is_some() {
            return Err(self.error(at, format!("expected exactly one of {}", backquoted(variants, ", "))));
        }
        Ok(())
    }

    /// "invalid type: <what is there>, expected <expected>", after reading
    /// the offending value (or the syntax error found instead).
    fn invalid_type(&mut self, at: &Path<'_>, expected: &str) -> Failed {
        let found = match self.peek() {
            Some(b'"') => self.string(at).map(|s| format!("string {}", quote(&s))),
            Some(b'-' | b'0'..=b'9') => self.number(at).map(|n| {
                let kind = match n.to_u64() {
                    Ok(_) | Err(("integer", _)) => "integer",
                    Err(_) => "floating point",
                };
                format!("{kind} `{}`", n.text)
            }),
            Some(b't') => self.literal(at, b"true").map(|()| "boolean `true`".to_string()),
            Some(b'f') => self.literal(at, b"false").map(|()| "boolean `false`".to_string()),
            Some(b'n') => self.literal(at, b"null").map(|()| "null".to_string()),
            Some(b'[') => Ok("sequence".to_string()),
            Some(b'{') => Ok("map".to_string()),
            Some(_) => Err(self.syntax(at, "expected value")),
            None => Err(self.syntax(at, "EOF while parsing a value")),
        };
        match found {
            Ok(found) => self.error(at, format!("invalid type: {found}, expected {expected}")),
            Err(e) => e,
        }
    }

    fn literal(&mut self, at: &Path<'_>, word: &[u8]) -> Result<(), Failed> {
        for &expected in word {
            match self.src.get(self.pos) {
                Some(&b) if b == expected => self.pos += 1,
                Some(_) => return Err(self.syntax(at, "expected ident")),
                None => return Err(self.syntax(at, "EOF while parsing a value")),
            }
        }
        Ok(())
    }

    /// Checks the syntax of one value of any type and skips it.
    fn skip_value(&mut self, at: &Path<'_>) -> Result<(), Failed> {
        match self.peek() {
            Some(b'"') => self.string(at).map(drop),
            Some(b'-' | b'0'..=b'9') => self.number(at).map(drop),
            Some(b't') => self.literal(at, b"true"),
            Some(b'f') => self.literal(at, b"false"),
            Some(b'n') => self.literal(at, b"null"),
            Some(b'[') => {
                let mut array = self.begin(at, b'[')?;
                while self.next_element(at, &mut array)? {
                    self.skip_value(at)?;
                }
                Ok(())
            }
            Some(b'{') => {
                let mut object = self.begin(at, b'{')?;
                while self.next_member(at, &mut object)?.is_some() {
                    self.skip_value(at)?;
                }
                Ok(())
            }
            Some(_) => Err(self.syntax(at, "expected value")),
            None => Err(self.syntax(at, "EOF while parsing a value")),
        }
    }

    /// A number (the cursor is on `-` or a digit), checked against JSON's
    /// grammar: no leading zeros, digits after `.` and in exponents.
    fn number(&mut self, at: &Path<'_>) -> Result<Number<'a>, Failed> {
        let start = self.pos;
        let digits = |d: &mut Self| {
            let from = d.pos;
            while let Some(b'0'..=b'9') = d.src.get(d.pos) {
                d.pos += 1;
            }
            d.pos - from
        };
        if self.src.get(self.pos) == Some(&b'-') {
            self.pos += 1;
        }
        let leading_zero = self.src.get(self.pos) == Some(&b'0');
        let int_digits = digits(self);
        if int_digits == 0 {
            return Err(self.invalid_number(at));
        }
        if leading_zero && int_digits > 1 {
            self.pos -= int_digits - 1;
            return Err(self.invalid_number(at));
        }
        let mut integer = true;
        if self.src.get(self.pos) == Some(&b'.') {
            integer = false;
            self.pos += 1;
            if digits(self) == 0 {
                return Err(self.invalid_number(at));
            }
        }
        if let Some(b'e' | b'E') = self.src.get(self.pos) {
            integer = false;
            self.pos += 1;
            if let Some(b'+' | b'-') = self.src.get(self.pos) {
                self.pos += 1;
            }
            if digits(self) == 0 {
                return Err(self.invalid_number(at));
            }
        }
        let text = self.src.get(start..self.pos).and_then(|t| std::str::from_utf8(t).ok()).unwrap_or("0");
        Ok(Number { text, integer })
    }

    fn invalid_number(&self, at: &Path<'_>) -> Failed {
        match self.src.get(self.pos) {
            None => self.syntax(at, "EOF while parsing a value"),
            Some(_) => self.syntax(at, "invalid number"),
        }
    }

    /// A string (the cursor is on its opening quote), unescaped. Borrowed
    /// when it holds no escapes.
    fn string(&mut self, at: &Path<'_>) -> Result<Cow<'a, str>, Failed> {
        self.pos += 1;
        let mut owned: Option<String> = None;
        let mut run_start = self.pos;
        loop {
            let Some(&b) = self.src.get(self.pos) else {
                return Err(self.syntax(at, "EOF while parsing a string"));
            };
            if b != b'"' && b != b'\\' && b >= 0x20 {
                self.pos += 1;
                continue;
            }
            if b < 0x20 {
                return Err(self.syntax(at, "control character (\\u0000-\\u001F) found while parsing a string"));
            }
            let run = self.src.get(run_start..self.pos).unwrap_or(b"");
            let run = match std::str::from_utf8(run) {
                Ok(run) => run,
                Err(e) => {
                    self.pos = run_start + e.valid_up_to();
                    return Err(self.syntax(at, "invalid unicode code point"));
                }
            };
            self.pos += 1;
            if b == b'"' {
                return Ok(match owned {
                    None => Cow::Borrowed(run),
                    Some(mut s) => {
                        s.push_str(run);
                        Cow::Owned(s)
                    }
                });
            }
            let s = owned.get_or_insert_with(String::new);
            s.push_str(run);
            let c = self.escape(at)?;
            s.push(c);
            run_start = self.pos;
        }
    }

    /// The character of an escape; the cursor is after the backslash.
    fn escape(&mut self, at: &Path<'_>) -> Result<char, Failed> {
        let Some(&b) = self.src.get(self.pos) else {
            return Err(self.syntax(at, "EOF while parsing a string"));
        };
        self.pos += 1;
        Ok(match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let first = self.hex4(at)?;
                let code = match first {
                    0xDC00..=0xDFFF => return Err(self.error(at, "lone leading surrogate in hex escape".into())),
                    0xD800..=0xDBFF => {
                        if self.src.get(self.pos) != Some(&b'\\') || self.src.get(self.pos + 1) != Some(&b'u') {
                            return Err(self.error(at, "unexpected end of hex escape".into()));
                        }
                        self.pos += 2;
                        let second = self.hex4(at)?;
                        if !(0xDC00..=0xDFFF).contains(&second) {
                            return Err(self.error(at, "lone leading surrogate in hex escape".into()));
                        }
                        0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00)
                    }
                    other => other,
                };
                char::from_u32(code).ok_or_else(|| self.error(at, "invalid unicode code point".into()))?
            }
            _ => {
                self.pos -= 1;
                return Err(self.syntax(at, "invalid escape"));
            }
        })
    }

    fn hex4(&mut self, at: &Path<'_>) -> Result<u32, Failed> {
        let mut value = 0;
        for _ in 0..4 {
            let digit = match self.src.get(self.pos) {
                None => return Err(self.syntax(at, "EOF while parsing a string")),
                Some(&b) => char::from(b).to_digit(16),
            };
            let Some(digit) = digit else {
                return Err(self.syntax(at, "invalid escape"));
            };
            value = value * 16 + digit;
            self.pos += 1;
        }
        Ok(value)
    }
}

impl Decode for String {
    fn blank() -> Self {
        String::new()
    }
    fn decode_into(&mut self, d: &mut Decoder<'_>, at: &Path<'_>) -> Result<(), Failed> {
        *self = d.string_value(at)?;
        Ok(())
    }
}

impl Decode for bool {
    fn blank() -> Self {
        false
    }
    fn decode_into(&mut self, d: &mut Decoder<'_>, at: &Path<'_>) -> Result<(), Failed> {
        *self = d.boolean(at)?;
        Ok(())
    }
}

impl Decode for u16 {
    fn blank() -> Self {
        0
    }
    fn decode_into(&mut self, d: &mut Decoder<'_>, at: &Path<'_>) -> Result<(), Failed> {
        *self = d.unsigned(at, u16::MAX.into(), "u16")? as u16;
        Ok(())
    }
}

impl Decode for u32 {
    fn blank() -> Self {
        0
    }
    fn decode_into(&mut self, d: &mut Decoder<'_>, at: &Path<'_>) -> Result<(), Failed> {
        *self = d.unsigned(at, u32::MAX.into(), "u32")? as u32;
        Ok(())
    }
}

impl Decode for u64 {
    fn blank() -> Self {
        0
    }
    fn decode_into(&mut self, d: &mut Decoder<'_>, at: &Path<'_>) -> Result<(), Failed> {
        *self = d.unsigned(at, u64::MAX, "u64")?;
        Ok(())
    }
}

impl Decode for f64 {
    fn blank() -> Self {
        0.0
    }
    fn decode_into(&mut self, d: &mut Decoder<'_>, at: &Path<'_>) -> Result<(), Failed> {
        *self = d.float(at)?;
        Ok(())
    }
}

/// `null` is `None`, as serde reads an `Option`.
impl<T: Decode> Decode for Option<T> {
    fn blank() -> Self {
        None
    }
    fn decode_into(&mut self, d: &mut Decoder<'_>, at: &Path<'_>) -> Result<(), Failed> {
        if d.null(at)? {
            *self = None;
            return Ok(());
        }
        self.insert(T::blank()).decode_into(d, at)
    }
}

impl<T: Decode> Decode for Vec<T> {
    fn blank() -> Self {
        Vec::new()
    }
    fn decode_into(&mut self, d: &mut Decoder<'_>, at: &Path<'_>) -> Result<(), Failed> {
        self.clear();
        d.elements(at, self)
    }
}

impl<T: Decode> Elements for Vec<T> {
    fn decode_element(&mut self, d: &mut Decoder<'_>, at: &Path<'_>) -> Result<(), Failed> {
        self.push(T::blank());
        match self.last_mut() {
            Some(item) => item.decode_into(d, at),
            None => Ok(()),
        }
    }
}

impl<V: Decode> Decode for KeyedList<V> {
    fn blank() -> Self {
        KeyedList(Vec::new())
    }
    fn decode_into(&mut self, d: &mut Decoder<'_>, at: &Path<'_>) -> Result<(), Failed> {
        self.0.clear();
        d.entries(at, self)
    }
}

impl<V: Decode> Entries for KeyedList<V> {
    fn decode_entry(&mut self, key: String, d: &mut Decoder<'_>, at: &Path<'_>) -> Result<(), Failed> {
        self.0.push((key, V::blank()));
        match self.0.last_mut() {
            Some((key, value)) => value.decode_into(d, &Path::Key(at, key)),
            None => Ok(()),
        }
    }
}

/// Implements `Decode` for a config struct from its field list, with the
/// serde attributes' meaning: `required` fields must be present, `default`
/// ones take `Default::default()` when absent; unknown and repeated fields
/// are errors (`deny_unknown_fields`). `field = "json"` renames.
macro_rules! decode_struct {
    ($ty:ident { $($field:ident $(= $json:literal)? : $kind:ident),* $(,)? }) => {
        impl $crate::json::Decode for $ty {
            fn blank() -> Self {
                $ty { $($field: $crate::json::Decode::blank()),* }
            }
            fn decode_into(
                &mut self,
                d: &mut $crate::json::Decoder<'_>,
                at: &$crate::error::Path<'_>,
            ) -> Result<(), $crate::error::Failed> {
                const FIELDS: &[&str] = &[$(decode_struct!(@name $field $($json)?)),*];
                const REQUIRED: &[bool] = &[$(decode_struct!(@required $kind)),*];
                d.fields(at, FIELDS, REQUIRED, self)
            }
        }

        impl $crate::json::Fields for $ty {
            fn decode_field(
                &mut self,
                index: usize,
                d: &mut $crate::json::Decoder<'_>,
                at: &$crate::error::Path<'_>,
            ) -> Result<(), $crate::error::Failed> {
                let mut _n = 0usize;
                $(
                    if index == _n {
                        return $crate::json::Decode::decode_into(&mut self.$field, d, at);
                    }
                    _n += 1;
                )*
                Ok(())
            }
        }
    };
    (@name $field:ident) => { stringify!($field) };
    (@name $field:ident $json:literal) => { $json };
    (@required required) => { true };
    (@required default) => { false };
}
pub(crate) use decode_struct;

/// A JSON object with user-chosen keys, kept in document order. Unlike a
/// plain map it refuses a repeated key instead of keeping the last one
/// silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyedList<V>(pub Vec<(String, V)>);

impl<V> Default for KeyedList<V> {
    fn default() -> Self {
        KeyedList(Vec::new())
    }
}

impl<V> KeyedList<V> {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &V)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v))
    }
}

impl<V, K: Into<String>> FromIterator<(K, V)> for KeyedList<V> {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        KeyedList(iter.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }
}

// serde support, for tools that build or read configs with serde (xds-ext
// serializes them). The filters decode with `Decode` above.
impl<'de, V: Deserialize<'de>> Deserialize<'de> for KeyedList<V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ListVisitor<V>(PhantomData<V>);
        impl<'de, V: Deserialize<'de>> Visitor<'de> for ListVisitor<V> {
            type Value = KeyedList<V>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries: Vec<(String, V)> = Vec::new();
                let mut seen = std::collections::HashSet::new();
                while let Some(key) = map.next_key::<String>()? {
                    if !seen.insert(key.clone()) {
                        return Err(serde::de::Error::custom(format!("duplicate key {}", quote(&key))));
                    }
                    let value = map.next_value()?;
                    entries.push((key, value));
                }
                Ok(KeyedList(entries))
            }
        }
        deserializer.deserialize_map(ListVisitor(PhantomData))
    }
}

impl<V: Serialize> Serialize for KeyedList<V> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_map(self.0.iter().map(|(k, v)| (k, v)))
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        // `parse_f64` is exact where `str::parse` takes Clinger's fast path,
        // close elsewhere, and agrees on what overflows.
        #[test]
        fn parse_f64_agrees_with_str_parse(
            int in "(0|[1-9][0-9]{0,20})",
            frac in "(\\.[0-9]{1,20})?",
            exp in "([eE][+-]?[0-9]{1,3})?",
        ) {
            let text = format!("{int}{frac}{exp}");
            let expected: f64 = text.parse().map_err(|e| TestCaseError::fail(format!("{e}")))?;
            match parse_f64(&text) {
                None => prop_assert!(expected.is_infinite(), "{} overflowed, std says {}", text, expected),
                Some(got) if int.len() + frac.len() <= 16 && exp.is_empty() => prop_assert_eq!(got, expected, "{}", text),
                Some(got) => prop_assert!(
                    got == expected || ((got - expected) / expected).abs() < 1e-14,
                    "{}: {} vs {}", text, got, expected
                ),
            }
        }
    }
}

/// The decoder against serde's derived one (the previous implementation):
/// every input one accepts, the other accepts with the same value.
#[cfg(all(test, not(target_arch = "wasm32")))]
#[allow(clippy::panic)] // tests fail by panicking
mod agrees_with_serde {
    use super::*;
    use crate::egress::EgressConfig;
    use crate::fault::FaultConfig;
    use crate::mirror::MirrorConfig;
    use crate::routing::RoutingConfig;
    use proptest::prelude::*;
    use serde::de::DeserializeOwned;
    use serde_json::{Map, Value};

    /// What `decode` did with serde: version probe, then the typed decode.
    fn with_serde<T: DeserializeOwned>(bytes: &[u8]) -> Option<T> {
        #[derive(Deserialize)]
        struct VersionProbe {
            version: Option<Value>,
        }
        if bytes.iter().find(|b| !b.is_ascii_whitespace()).is_some_and(|&b| b != b'{') {
            return None;
        }
        let probe: VersionProbe = serde_json::from_slice(bytes).ok()?;
        match probe.version {
            Some(Value::Number(n)) if n.as_u64() == Some(1) => serde_json::from_slice(bytes).ok(),
            _ => None,
        }
    }

    fn check<T: Decode + DeserializeOwned + Serialize + PartialEq + fmt::Debug>(
        bytes: &[u8],
    ) -> Result<(), TestCaseError> {
        let ours = decode::<T>(bytes);
        let theirs = with_serde::<T>(bytes);
        match (ours, theirs) {
            // Floats beyond the exact path may differ in the last place.
            (Ok(a), Some(b)) if a != b => {
                let (a, b) =
                    (serde_json::to_value(&a).unwrap_or_default(), serde_json::to_value(&b).unwrap_or_default());
                prop_assert!(close(&a, &b), "{} vs {}", a, b);
            }
            (Ok(_), Some(_)) => {}
            (Err(_), None) => {}
            (Ok(a), None) => prop_assert!(false, "only we accept {}: {:?}", String::from_utf8_lossy(bytes), a),
            (Err(e), Some(b)) => {
                prop_assert!(false, "only serde accepts {}: {:?} (we say {})", String::from_utf8_lossy(bytes), b, e)
            }
        }
        Ok(())
    }

    fn close(a: &Value, b: &Value) -> bool {
        match (a, b) {
            (Value::Number(x), Value::Number(y)) => match (x.as_f64(), y.as_f64()) {
                (Some(x), Some(y)) => x == y || ((x - y) / y).abs() < 1e-15,
                _ => x == y,
            },
            (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| close(x, y)),
            (Value::Object(x), Value::Object(y)) => {
                x.len() == y.len() && x.iter().zip(y).all(|((k, x), (l, y))| k == l && close(x, y))
            }
            _ => a == b,
        }
    }

    fn check_all(bytes: &[u8]) -> Result<(), TestCaseError> {
        check::<RoutingConfig>(bytes)?;
        check::<FaultConfig>(bytes)?;
        check::<MirrorConfig>(bytes)?;
        check::<EgressConfig>(bytes)
    }

    const KEYS: &[&str] = &[
        "version",
        "virtual_hosts",
        "name",
        "domains",
        "routes",
        "match",
        "uri",
        "exact",
        "prefix",
        "regex",
        "headers",
        "without_headers",
        "query_params",
        "ignore_uri_case",
        "port",
        "method",
        "authority",
        "scheme",
        "route",
        "destination",
        "host",
        "subset",
        "weight",
        "redirect",
        "redirect_code",
        "rewrite",
        "timeout",
        "retries",
        "attempts",
        "per_try_timeout",
        "retry_on",
        "request",
        "response",
        "set",
        "add",
        "remove",
        "sticky",
        "header",
        "cookie",
        "cluster_header",
        "cluster_name_template",
        "delay",
        "fixed_delay",
        "percentage",
        "abort",
        "http_status",
        "grpc_status",
        "max_active_faults",
        "mirrors",
        "max_body_bytes",
        "max_pending",
        "max_in_flight",
        "compare",
        "status",
        "body_bytes",
        "log_headers",
        "log_per_minute",
        "outbound_traffic_policy",
        "hosts",
        "ports",
        "dry_run",
        "deny_status",
        "end-user",
        "REGISTRY_ONLY",
        "ALLOW_ANY",
    ];

    /// JSON built from the configs' own field names, so that many documents
    /// decode (or fail deep inside) rather than stopping at the first key.
    fn config_like() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            Just(Value::from(1)),
            (0u32..70_000).prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            (-100_000i32..100_000).prop_map(|v| Value::from(f64::from(v) / 100.0)),
            prop::sample::select(vec!["REGISTRY_ONLY", "ALLOW_ANY", "a", "x-b", "0.5s", "5xx", "exact", "class"])
                .prop_map(|s| Value::String(s.to_string())),
            "[a-z*.:/{}|0-9\\\\\"-]{0,8}".prop_map(Value::String),
        ];
        leaf.prop_recursive(6, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|pairs| {
                    let mut map = Map::new();
                    for (k, v) in pairs {
                        map.insert(k.to_string(), v);
                    }
                    Value::Object(map)
                }),
            ]
        })
    }

    /// A document with `version: 1` and the generated members on top.
    fn document() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec((prop::sample::select(KEYS), config_like()), 0..5).prop_map(|pairs| {
            let mut map = Map::new();
            map.insert("version".into(), Value::from(1));
            for (k, v) in pairs {
                map.insert(k.to_string(), v);
            }
            serde_json::to_vec(&Value::Object(map)).unwrap_or_default()
        })
    }

    const VALID: &[&str] = &[
        r#"{"version": 1, "cluster_header": "x-c", "cluster_name_template": "{host}", "virtual_hosts": [{"name": "v",
            "domains": ["*", "a.com"], "routes": [{"name": "r", "match": [{"name": "m", "uri": {"prefix": "/a"},
            "scheme": {"exact": "http"}, "method": {"regex": "G.*"}, "authority": {}, "headers": {"end-user": {"exact": "j"}},
            "without_headers": {"x": {}}, "query_params": {"q": {"prefix": "1"}}, "ignore_uri_case": true, "port": 80}],
            "route": [{"destination": {"host": "a", "subset": "v1", "port": 1}, "weight": 60,
            "headers": {"request": {"set": {"a": "1"}, "add": {"b": "2"}, "remove": ["c"]}}},
            {"destination": {"host": "b"}, "weight": 40}], "timeout": "1s",
            "retries": {"attempts": 2, "per_try_timeout": "0.5s", "retry_on": "5xx"},
            "headers": {"response": {"remove": ["x"]}}, "rewrite": {"uri": "/b", "authority": "b"},
            "sticky": {"cookie": "s"}}, {"name": "d", "redirect": {"uri": "/x", "authority": "y", "scheme": "https",
            "redirect_code": 302}, "sticky": null, "timeout": null}]}]}"#,
        r#"{"version": 1, "max_active_faults": 3, "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
            {"name": "f", "delay": {"fixed_delay": "1s", "percentage": 10.5},
            "abort": {"http_status": 500, "grpc_status": null, "percentage": 1e1}}]}]}"#,
        r#"{"version": 1, "max_body_bytes": 10, "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
            {"name": "m", "mirrors": [{"destination": {"host": "a", "port": 1}, "percentage": 0.25},
            {"destination": {"host": "b", "port": 2}}]}]}]}"#,
        r#"{"version": 1, "max_pending": 100, "virtual_hosts": [{"name": "v", "domains": ["*"], "routes": [
            {"name": "m", "mirrors": [{"destination": {"host": "a", "port": 1}, "timeout": "2s", "max_in_flight": 10,
            "compare": {"status": "class", "headers": ["content-type", "x-v"], "body_bytes": 4096,
            "log_headers": ["x-v"], "log_per_minute": 5}},
            {"destination": {"host": "b", "port": 2}, "compare": {"status": {"exact": null}}}]}]}]}"#,
        r#"{"version": 1, "outbound_traffic_policy": "ALLOW_ANY", "hosts": [{"host": "a.com", "ports": [443]},
            {"host": "b.com", "ports": null}], "dry_run": true, "deny_status": 503}"#,
        r#"{"version": 1, "outbound_traffic_policy": {"REGISTRY_ONLY": null}}"#,
        r#"{"version":1,"outbound_traffic_policy":"REGISTRY_ONLY","hosts":[{"host":"\u0061.com"}],"deny_status":503}"#,
        r#"  {"version" : 1 , "outbound_traffic_policy" : "REGISTRY_ONLY" , "dry_run" : false}  "#,
    ];

    #[test]
    fn valid_configs_decode_the_same() {
        for json in VALID {
            let accepted = [
                decode::<RoutingConfig>(json.as_bytes()).is_ok(),
                decode::<FaultConfig>(json.as_bytes()).is_ok(),
                decode::<MirrorConfig>(json.as_bytes()).is_ok(),
                decode::<EgressConfig>(json.as_bytes()).is_ok(),
            ];
            assert_eq!(accepted.iter().filter(|a| **a).count(), 1, "{json}");
            if let Err(e) = check_all(json.as_bytes()) {
                panic!("{e}");
            }
        }
    }

    #[test]
    fn edge_cases_decode_the_same() {
        let egress = |rest: &str| format!(r#"{{"version": 1, "outbound_traffic_policy": "REGISTRY_ONLY"{rest}}}"#);
        let mut cases: Vec<String> = [
            r#"{"version": 1, "version": 1, "outbound_traffic_policy": "ALLOW_ANY"}"#,
            r#"{"version": 1.0, "outbound_traffic_policy": "ALLOW_ANY"}"#,
            r#"{"version": null, "outbound_traffic_policy": "ALLOW_ANY"}"#,
            r#"{"v\u0065rsion": 1, "outbound_traffic_policy": "ALLOW_ANY"}"#,
            r#"{"version": 1, "outbound_traffic_policy": {"ALLOW_ANY": null, "REGISTRY_ONLY": null}}"#,
            r#"{"version": 1, "outbound_traffic_policy": {"ALLOW_ANY": 1}}"#,
            r#"{"version": 1, "outbound_traffic_policy": {}}"#,
            r#"{"version": 1, "outbound_traffic_policy": ["ALLOW_ANY"]}"#,
            r#"{"version": 01, "outbound_traffic_policy": "ALLOW_ANY"}"#,
            r#"{"version": 1, "outbound_traffic_policy": "ALLOW_ANY",}"#,
            r#"{"version": 1, "outbound_traffic_policy": "ALLOW_ANY"} x"#,
            "{\"version\": 1, \"outbound_traffic_policy\": \"ALLOW_\u{1}ANY\"}",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        for rest in [
            r#", "dry_run": true, "dry_run": false"#,
            r#", "deny_status": -0"#,
            r#", "deny_status": 1E2"#,
            r#", "deny_status": 18446744073709551616"#,
            r#", "deny_status": 65536"#,
            r#", "deny_status": 503.0"#,
            r#", "hosts": [{"host": "\ud83d\ude00"}]"#,
            r#", "hosts": [{"host": "\ud800"}]"#,
            r#", "hosts": [{"host": "\udc00x"}]"#,
            r#", "hosts": [{"host": "a\/b\"c\\d\b\f\n\r\t"}]"#,
            r#", "hosts": [{"host": "\x"}]"#,
            r#", "hosts": [{"host": "a", "ports": [1, 2,]}]"#,
            r#", "hosts": [{"host": "a", "ports": [1 2]}]"#,
            r#", "hosts": [{"host": "a", "host": "b"}]"#,
            r#", "hosts": [{"host": "a"}] , "hosts": []"#,
        ] {
            cases.push(egress(rest));
        }
        cases.push(format!(
            r#"{{"version": 1, "outbound_traffic_policy": "ALLOW_ANY", "hosts": {}{}}}"#,
            "[".repeat(127),
            "]".repeat(127)
        ));
        cases.push(format!(r#"{{"version": 1, "x": {}{}}}"#, "[".repeat(300), "]".repeat(300)));
        for json in &cases {
            if let Err(e) = check_all(json.as_bytes()) {
                panic!("{e}");
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn config_shaped_json(bytes in document()) {
            check_all(&bytes)?;
        }

        /// Decoding and the validation behind it, on documents that get deep.
        #[test]
        fn compiling_config_shaped_json_never_panics(bytes in document()) {
            let _ = crate::routing::CompiledRouting::from_json(&bytes);
            let _ = crate::fault::CompiledFault::from_json(&bytes);
            let _ = crate::mirror::CompiledMirror::from_json(&bytes);
            let _ = crate::egress::CompiledEgress::from_json(&bytes);
        }

        /// Valid configs with one byte changed: syntax errors, wrong types,
        /// unknown fields and duplicates close to what serde has seen.
        #[test]
        fn mutated_valid_configs(which in 0..VALID.len(), at in any::<prop::sample::Index>(), byte in prop::sample::select(
            b"{}[]:,\"\\ 0123456789.eE+-tfnulaxyz\x00\xff".to_vec()
        ), insert in any::<bool>()) {
            let mut bytes = VALID[which].as_bytes().to_vec();
            let i = at.index(bytes.len());
            if insert {
                bytes.insert(i, byte);
            } else {
                bytes[i] = byte;
            }
            check_all(&bytes)?;
        }
    }
}
