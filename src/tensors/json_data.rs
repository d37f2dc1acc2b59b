//! JSON tensor data ⇄ wire bytes.
//!
//! Decoding walks the JSON once with serde, writing each element straight into the
//! little-endian buffer the binary path would have carried; nothing is built in between.
//! Numbers that do not fit the datatype are refused rather than narrowed.

use std::fmt;

use bytes::Bytes;
use half::{bf16, f16};
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};

use super::tensor::{element_count, fixed_byte_size, push_bytes_element};
use super::{DataType, Tensor, TensorError};

/// Decodes `raw` (a JSON array, flat or nested like `shape`) into wire bytes.
pub fn decode_json_data(
    raw: &str,
    datatype: DataType,
    shape: &[u64],
    max_elements: u64,
) -> Result<Bytes, TensorError> {
    let expected = element_count(shape, max_elements)?;
    match flat_numbers(raw, datatype, expected) {
        Some(out) => Ok(Bytes::from(out)),
        None => decode_any(raw, datatype, shape, expected),
    }
}

/// The general decoder: nested arrays, every datatype, and precise errors.
fn decode_any(
    raw: &str,
    datatype: DataType,
    shape: &[u64],
    expected: u64,
) -> Result<Bytes, TensorError> {
    // A JSON element takes at least two characters, so the text bounds the allocation
    // whatever count a lying shape claims.
    let capacity_elements = expected.min(raw.len() as u64 / 2 + 1);
    let capacity = fixed_byte_size(datatype, capacity_elements).unwrap_or(capacity_elements * 8);
    let mut sink = Sink {
        datatype,
        shape,
        out: Vec::with_capacity(capacity as usize),
        count: 0,
        nested: None,
        error: None,
    };
    let mut de = serde_json::Deserializer::from_str(raw);
    let parsed = ArraySeed {
        sink: &mut sink,
        depth: 0,
    }
    .deserialize(&mut de)
    .and_then(|()| de.end());
    if let Err(e) = parsed {
        return Err(sink
            .error
            .take()
            .unwrap_or(TensorError::Json(e.to_string())));
    }
    if sink.count != expected {
        return Err(TensorError::JsonCountMismatch {
            expected,
            actual: sink.count,
        });
    }
    Ok(Bytes::from(sink.out))
}

struct Sink<'s> {
    datatype: DataType,
    shape: &'s [u64],
    out: Vec<u8>,
    count: u64,
    /// Decided by the first element: nested arrays mirror the shape, flat ones hold scalars only.
    nested: Option<bool>,
    /// The precise error; serde's own error type only carries text.
    error: Option<TensorError>,
}

impl Sink<'_> {
    fn fail<E: de::Error>(&mut self, error: TensorError) -> E {
        let e = E::custom(&error);
        self.error = Some(error);
        e
    }

    fn nesting<E: de::Error>(&mut self, why: String) -> E {
        self.fail(TensorError::JsonNesting(why))
    }

    fn bad_value<E: de::Error>(&mut self, value: impl fmt::Display) -> E {
        let datatype = self.datatype;
        self.fail(TensorError::JsonValue {
            datatype,
            value: value.to_string(),
        })
    }

    /// Checks that a scalar may stand at `depth` (1 = inside the outer array).
    fn scalar_at<E: de::Error>(&mut self, depth: usize) -> Result<(), E> {
        let nested = *self.nested.get_or_insert(false);
        let rank = self.shape.len();
        if nested && depth != rank {
            return Err(self.nesting(format!(
                "a number at depth {depth} where the shape has rank {rank}"
            )));
        }
        self.count += 1;
        Ok(())
    }

    fn push_int<E: de::Error>(&mut self, v: i128, depth: usize) -> Result<(), E> {
        self.scalar_at(depth)?;
        if push_int_value(&mut self.out, self.datatype, v) {
            Ok(())
        } else {
            Err(self.bad_value(v))
        }
    }

    fn push_float<E: de::Error>(&mut self, v: f64, depth: usize) -> Result<(), E> {
        if v == 0.0 && v.is_sign_negative() && self.datatype.is_integer() {
            // serde_json reads "-0", JSON's other spelling of 0, as -0.0: for an integer
            // datatype it is 0, as Triton's parser reads it. (Other float literals, 1.0 or 1E2,
            // are refused for integers, as Triton refuses them.)
            return self.push_int(0, depth);
        }
        self.scalar_at(depth)?;
        self.push_float_value(v, &v)
    }

    /// Writes `v` as the float datatype, refusing values its range cannot hold.
    fn push_float_value<E: de::Error>(
        &mut self,
        v: f64,
        shown: &dyn fmt::Display,
    ) -> Result<(), E> {
        if push_float_bytes(&mut self.out, self.datatype, v) {
            Ok(())
        } else {
            Err(self.bad_value(shown))
        }
    }
}

/// Appends integer `v` as `datatype`; false when the datatype cannot hold it.
fn push_int_value(out: &mut Vec<u8>, datatype: DataType, v: i128) -> bool {
    macro_rules! int {
        ($t:ty) => {
            match <$t>::try_from(v) {
                Ok(x) => out.extend_from_slice(&x.to_le_bytes()),
                Err(_) => return false,
            }
        };
    }
    match datatype {
        DataType::Int8 => int!(i8),
        DataType::Int16 => int!(i16),
        DataType::Int32 => int!(i32),
        DataType::Int64 => int!(i64),
        DataType::Uint8 => int!(u8),
        DataType::Uint16 => int!(u16),
        DataType::Uint32 => int!(u32),
        DataType::Uint64 => int!(u64),
        DataType::Fp16 | DataType::Bf16 | DataType::Fp32 | DataType::Fp64 => {
            return push_float_bytes(out, datatype, int_to_f64(v))
        }
        DataType::Bool | DataType::Bytes => return false,
    }
    true
}

/// Appends `v` as float `datatype`; false when it is out of the datatype's range (or the
/// datatype is not a float).
fn push_float_bytes(out: &mut Vec<u8>, datatype: DataType, v: f64) -> bool {
    match datatype {
        DataType::Fp16 => {
            let x = f16::from_f64(v);
            out.extend_from_slice(&x.to_le_bytes());
            x.is_finite()
        }
        DataType::Bf16 => {
            let x = bf16::from_f64(v);
            out.extend_from_slice(&x.to_le_bytes());
            x.is_finite()
        }
        DataType::Fp32 => {
            let x = v as f32;
            out.extend_from_slice(&x.to_le_bytes());
            x.is_finite()
        }
        DataType::Fp64 => {
            // JSON has no infinity: an infinite value is a literal past f64's range (4E+535).
            out.extend_from_slice(&v.to_le_bytes());
            v.is_finite()
        }
        _ => false,
    }
}

/// The common and costly case, fast: a flat array of plain numbers (what tritonclient and
/// kserve send). Anything else (nesting, strings, booleans, values out of range, a wrong
/// count, malformed numbers) gives `None`, and the general decoder takes it and reports the
/// error. Results are the same either way: numbers are parsed correctly rounded.
fn flat_numbers(raw: &str, datatype: DataType, expected: u64) -> Option<Vec<u8>> {
    let size = datatype.element_size()?;
    match datatype {
        DataType::Bool | DataType::Bytes => None,
        // The most common datatype gets a copy of the loop without the per-element match.
        DataType::Fp32 => flat_array(raw.as_bytes(), expected, size, |out, number| {
            let x = number.to_f64() as f32;
            out.extend_from_slice(&x.to_le_bytes());
            x.is_finite()
        }),
        _ => flat_array(raw.as_bytes(), expected, size, |out, number| match number {
            Number::Int(v) => push_int_value(out, datatype, v),
            Number::Float(v) => push_float_bytes(out, datatype, v),
        }),
    }
}

/// `flat_numbers` for one datatype: `push` appends a number's bytes, false when it does not fit.
fn flat_array(
    text: &[u8],
    expected: u64,
    size: usize,
    mut push: impl FnMut(&mut Vec<u8>, Number) -> bool,
) -> Option<Vec<u8>> {
    let skip = |mut i: usize| {
        while text
            .get(i)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            i += 1;
        }
        i
    };
    // A number takes at least two characters with its comma: the text bounds the allocation.
    let capacity = expected.min(text.len() as u64 / 2 + 1) * size as u64;
    let mut out = Vec::with_capacity(capacity as usize);
    let mut count = 0u64;
    let mut i = skip(0);
    if text.get(i) != Some(&b'[') {
        return None;
    }
    i = skip(i + 1);
    if text.get(i) == Some(&b']') {
        i += 1;
    } else {
        loop {
            let (number, next) = number_at(text, i)?;
            let pushed = push(&mut out, number);
            count += 1;
            if !pushed || count > expected {
                return None;
            }
            i = skip(next);
            match text.get(i) {
                Some(b',') => i = skip(i + 1),
                Some(b']') => {
                    i += 1;
                    break;
                }
                _ => return None,
            }
        }
    }
    (skip(i) == text.len() && count == expected).then_some(out)
}

enum Number {
    Int(i128),
    Float(f64),
}

impl Number {
    fn to_f64(&self) -> f64 {
        match *self {
            Number::Int(v) => int_to_f64(v),
            Number::Float(v) => v,
        }
    }
}

/// `v as f64`, through i64 where it fits: i128 has no hardware conversion, and the result
/// is the same (both round to nearest).
fn int_to_f64(v: i128) -> f64 {
    i64::try_from(v).map_or(v as f64, |v| v as f64)
}

/// Parses the JSON number starting at `text[start]`, strictly, in one pass; gives it and the
/// index after it. Decimals of up to 19 digits with a small exponent (nearly all in practice)
/// are exact in one multiplication or division of f64s (Clinger's fast path); the rest go to
/// the standard library's correctly rounded parser.
fn number_at(text: &[u8], start: usize) -> Option<(Number, usize)> {
    const POW10: [f64; 23] = [
        1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16,
        1e17, 1e18, 1e19, 1e20, 1e21, 1e22,
    ];
    let digit_at = |i: usize| {
        text.get(i)
            .map(|b| b.wrapping_sub(b'0'))
            .filter(|&d| d < 10)
    };
    let negative = text.get(start) == Some(&b'-');
    let mut i = start + usize::from(negative);
    // Wraps past 19 digits; such numbers take the slow path below.
    let mut mantissa = 0u64;
    let int_start = i;
    while let Some(d) = digit_at(i) {
        mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d));
        i += 1;
    }
    let int_len = i - int_start;
    if int_len == 0 || (int_len > 1 && text[int_start] == b'0') {
        return None;
    }
    let mut fraction_len = 0;
    if text.get(i) == Some(&b'.') {
        i += 1;
        while let Some(d) = digit_at(i) {
            mantissa = mantissa.wrapping_mul(10).wrapping_add(u64::from(d));
            i += 1;
            fraction_len += 1;
        }
        if fraction_len == 0 {
            return None;
        }
    }
    let mut exponent = 0i64;
    let has_exponent = matches!(text.get(i), Some(b'e' | b'E'));
    if has_exponent {
        i += 1;
        let sign = match text.get(i) {
            Some(b'-') => -1,
            Some(b'+') => 1,
            _ => 0,
        };
        i += usize::from(sign != 0);
        let digits_start = i;
        while let Some(d) = digit_at(i) {
            exponent = exponent * 10 + i64::from(d);
            i += 1;
            if i - digits_start > 4 {
                return None;
            }
        }
        if i == digits_start {
            return None;
        }
        exponent *= if sign < 0 { -1 } else { 1 };
    }
    let token = &text[start..i];
    let digits = int_len + fraction_len;
    if fraction_len == 0 && !has_exponent {
        // "-0" is a float (-0.0) to serde_json, whose rules the general path keeps.
        if negative && mantissa == 0 {
            return None;
        }
        let v = if digits <= 19 {
            i128::from(mantissa)
        } else {
            std::str::from_utf8(&token[usize::from(negative)..])
                .ok()?
                .parse::<i128>()
                .ok()?
        };
        return Some((Number::Int(if negative { -v } else { v }), i));
    }
    let scale = exponent - fraction_len as i64;
    if digits <= 19 && mantissa <= 1 << 53 && (-22..=22).contains(&scale) {
        let m = mantissa as f64;
        let v = if scale >= 0 {
            m * POW10[scale as usize]
        } else {
            m / POW10[(-scale) as usize]
        };
        return Some((Number::Float(if negative { -v } else { v }), i));
    }
    let v = std::str::from_utf8(token).ok()?.parse::<f64>().ok()?;
    Some((Number::Float(v), i))
}

/// An array at `depth` (0 = the outer one).
struct ArraySeed<'a, 's> {
    sink: &'a mut Sink<'s>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ArraySeed<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(ElementVisitor {
            sink: self.sink,
            depth: self.depth,
        })
    }
}

/// Any element at `depth`: a nested array or a scalar.
struct ElementSeed<'a, 's> {
    sink: &'a mut Sink<'s>,
    depth: usize,
}

impl<'de> DeserializeSeed<'de> for ElementSeed<'_, '_> {
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(ElementVisitor {
            sink: self.sink,
            depth: self.depth,
        })
    }
}

struct ElementVisitor<'a, 's> {
    sink: &'a mut Sink<'s>,
    depth: usize,
}

impl<'de> Visitor<'de> for ElementVisitor<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "an array of {} values", self.sink.datatype)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let depth = self.depth;
        let sink = self.sink;
        if depth > 0 {
            let nested = *sink.nested.get_or_insert(true);
            if !nested {
                return Err(sink.nesting("arrays mixed with numbers".into()));
            }
            if depth >= sink.shape.len() {
                return Err(sink.nesting(format!(
                    "arrays nested deeper than the shape's rank {}",
                    sink.shape.len()
                )));
            }
        }
        let mut len = 0u64;
        while seq
            .next_element_seed(ElementSeed {
                sink: &mut *sink,
                depth: depth + 1,
            })?
            .is_some()
        {
            len += 1;
        }
        if sink.nested == Some(true) {
            let want = sink.shape.get(depth).copied().unwrap_or(0);
            if len != want {
                return Err(sink.nesting(format!(
                    "an array of {len} at depth {depth} where the shape has {want}"
                )));
            }
        }
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.sink.scalar_at(self.depth)?;
        if self.sink.datatype != DataType::Bool {
            return Err(self.sink.bad_value(v));
        }
        self.sink.out.push(v as u8);
        Ok(())
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.sink.push_int(v as i128, self.depth)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.sink.push_int(v as i128, self.depth)
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.sink.push_float(v, self.depth)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.sink.scalar_at(self.depth)?;
        if self.sink.datatype != DataType::Bytes {
            return Err(self.sink.bad_value(format_args!("{v:?}")));
        }
        push_bytes_element(&mut self.sink.out, v.as_bytes()).map_err(|e| self.sink.fail(e))
    }
}

/// Writes a tensor's elements as one flat JSON array.
///
/// Non-finite floats are written as `NaN`, `Infinity` and `-Infinity`, which Python's
/// `json` (and so tritonclient and kserve) reads back; JSON proper has no spelling for them.
/// BYTES elements that are not UTF-8 are written with replacement characters.
pub fn write_json_data(out: &mut Vec<u8>, tensor: &Tensor) {
    out.push(b'[');
    let mut first = true;
    let mut sep = |out: &mut Vec<u8>| {
        if !first {
            out.push(b',');
        }
        first = false;
    };
    macro_rules! each {
        ($t:ty, $write:expr) => {
            for chunk in tensor.data.chunks_exact(std::mem::size_of::<$t>()) {
                sep(out);
                let v = <$t>::from_le_bytes(chunk.try_into().unwrap_or_default());
                $write(out, v);
            }
        };
    }
    let int = |out: &mut Vec<u8>, v: i128| {
        out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes())
    };
    match tensor.datatype {
        DataType::Bool => {
            for &b in tensor.data.iter() {
                sep(out);
                out.extend_from_slice(if b != 0 { b"true" } else { b"false" });
            }
        }
        DataType::Uint8 => each!(u8, |o, v: u8| int(o, v.into())),
        DataType::Uint16 => each!(u16, |o, v: u16| int(o, v.into())),
        DataType::Uint32 => each!(u32, |o, v: u32| int(o, v.into())),
        DataType::Uint64 => each!(u64, |o, v: u64| int(o, v.into())),
        DataType::Int8 => each!(i8, |o, v: i8| int(o, v.into())),
        DataType::Int16 => each!(i16, |o, v: i16| int(o, v.into())),
        DataType::Int32 => each!(i32, |o, v: i32| int(o, v.into())),
        DataType::Int64 => each!(i64, |o, v: i64| int(o, v.into())),
        DataType::Fp16 => each!(u16, |o, v: u16| write_f32(o, f16::from_bits(v).to_f32())),
        DataType::Bf16 => each!(u16, |o, v: u16| write_f32(o, bf16::from_bits(v).to_f32())),
        DataType::Fp32 => each!(f32, write_f32),
        DataType::Fp64 => each!(f64, write_f64),
        DataType::Bytes => {
            for element in tensor.bytes_elements() {
                sep(out);
                let text = String::from_utf8_lossy(element);
                // Writing a &str into a Vec cannot fail.
                let _ = serde_json::to_writer(&mut *out, &*text);
            }
        }
    }
    out.push(b']');
}

fn write_f32(out: &mut Vec<u8>, v: f32) {
    if v.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(v).as_bytes());
    } else {
        write_non_finite(out, v.is_nan(), v.is_sign_negative());
    }
}

fn write_f64(out: &mut Vec<u8>, v: f64) {
    if v.is_finite() {
        out.extend_from_slice(zmij::Buffer::new().format_finite(v).as_bytes());
    } else {
        write_non_finite(out, v.is_nan(), v.is_sign_negative());
    }
}

fn write_non_finite(out: &mut Vec<u8>, nan: bool, negative: bool) {
    out.extend_from_slice(match (nan, negative) {
        (true, _) => b"NaN",
        (false, false) => b"Infinity",
        (false, true) => b"-Infinity",
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(raw: &str, dt: DataType, shape: &[u64]) -> Result<Bytes, TensorError> {
        decode_json_data(raw, dt, shape, 1 << 20)
    }

    fn encode(dt: DataType, shape: &[u64], data: Bytes) -> String {
        let tensor = Tensor::new(dt, shape.to_vec(), data, 1 << 20).unwrap();
        let mut out = Vec::new();
        write_json_data(&mut out, &tensor);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn flat_and_nested_give_the_same_bytes() {
        let flat = decode("[1,2,3,4,5,6]", DataType::Int32, &[2, 3]).unwrap();
        let nested = decode("[[1,2,3],[4,5,6]]", DataType::Int32, &[2, 3]).unwrap();
        assert_eq!(flat, nested);
        assert_eq!(&flat[..8], &[1, 0, 0, 0, 2, 0, 0, 0]);
        assert_eq!(encode(DataType::Int32, &[2, 3], flat), "[1,2,3,4,5,6]");
    }

    #[test]
    fn nesting_must_mirror_the_shape() {
        let cases = [
            "[[1,2],[3,4],[5,6]]",
            "[[1,2,3],4,5,6]",
            "[1,2,3,[4,5,6]]",
            "[[[1],[2],[3]],[[4],[5],[6]]]",
        ];
        for raw in cases {
            let err = decode(raw, DataType::Int32, &[2, 3]).unwrap_err();
            assert!(matches!(err, TensorError::JsonNesting(_)), "{raw}: {err}");
        }
        assert_eq!(
            decode("[1,2,3]", DataType::Int32, &[2, 3]).unwrap_err(),
            TensorError::JsonCountMismatch {
                expected: 6,
                actual: 3
            }
        );
    }

    #[test]
    fn edge_spellings_of_zero() {
        // "-0" is 0 for every integer datatype, as in Triton; for floats it keeps its sign.
        for dt in [
            DataType::Int32,
            DataType::Uint8,
            DataType::Int64,
            DataType::Uint64,
        ] {
            let zero = decode("[-0, [-0]]", dt, &[2]).map(|_| ());
            assert!(zero.is_err(), "nesting still checked");
            let got = decode("[-0, 0]", dt, &[2]).unwrap();
            assert!(got.iter().all(|&b| b == 0), "{dt}: {got:?}");
        }
        let fp32 = decode("[-0, -0.0, 0e0]", DataType::Fp32, &[3]).unwrap();
        let values: Vec<u32> = (fp32.chunks(4))
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()).to_bits())
            .collect();
        assert_eq!(values, [(-0.0f32).to_bits(), (-0.0f32).to_bits(), 0]);
        let fp64 = decode("[-0]", DataType::Fp64, &[1]).unwrap();
        assert!(f64::from_le_bytes(fp64[..].try_into().unwrap()).is_sign_negative());
        // Float literals are not integers, as Triton's parser has it.
        for raw in ["[1E2]", "[0e0]", "[1.0]"] {
            assert!(decode(raw, DataType::Int32, &[1]).is_err(), "{raw}");
        }
    }

    #[test]
    fn values_that_do_not_fit_are_refused() {
        let refused = [
            ("[300]", DataType::Uint8),
            ("[-1]", DataType::Uint32),
            ("[1.5]", DataType::Int32),
            ("[true]", DataType::Int8),
            ("[1]", DataType::Bool),
            ("[\"a\"]", DataType::Fp32),
            ("[1e39]", DataType::Fp32),
            ("[70000]", DataType::Fp16),
            ("[null]", DataType::Fp64),
            ("[2147483648]", DataType::Int32),
        ];
        for (raw, dt) in refused {
            let err = decode(raw, dt, &[1]).unwrap_err();
            assert!(
                matches!(err, TensorError::JsonValue { .. } | TensorError::Json(_)),
                "{raw} as {dt}: {err}"
            );
        }
        assert_eq!(
            decode("[300]", DataType::Uint8, &[1])
                .unwrap_err()
                .to_string(),
            "JSON value 300 is not a valid UINT8"
        );
    }

    #[test]
    fn every_datatype_round_trips() {
        let cases = [
            (DataType::Bool, "[true,false]"),
            (DataType::Uint8, "[0,255]"),
            (DataType::Uint16, "[0,65535]"),
            (DataType::Uint32, "[0,4294967295]"),
            (DataType::Uint64, "[0,18446744073709551615]"),
            (DataType::Int8, "[-128,127]"),
            (DataType::Int16, "[-32768,32767]"),
            (DataType::Int32, "[-2147483648,2147483647]"),
            (
                DataType::Int64,
                "[-9223372036854775808,9223372036854775807]",
            ),
            (DataType::Fp16, "[1.5,-65504.0]"),
            (DataType::Bf16, "[1.5,-2.0]"),
            (DataType::Fp32, "[0.1,-3.5]"),
            (DataType::Fp64, "[0.1,1e+300]"),
            (DataType::Bytes, r#"["a\"b","é"]"#),
        ];
        for (dt, raw) in cases {
            let bytes = decode(raw, dt, &[2]).unwrap();
            assert_eq!(encode(dt, &[2], bytes), raw, "{dt}");
        }
    }

    #[test]
    fn integers_convert_to_floats_and_fp16_is_exact() {
        let bytes = decode("[1, 2.5]", DataType::Fp16, &[2]).unwrap();
        assert_eq!(&bytes[..], &[0x00, 0x3c, 0x00, 0x41]);
    }

    #[test]
    fn non_finite_floats_are_written_for_python() {
        let mut data = Vec::new();
        for v in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            data.extend_from_slice(&v.to_le_bytes());
        }
        let text = encode(DataType::Fp32, &[3], Bytes::from(data));
        assert_eq!(text, "[NaN,Infinity,-Infinity]");
    }

    #[test]
    fn malformed_json_is_an_error_not_a_panic() {
        for raw in ["[1,2", "{\"a\":1}", "1", "[1,]", "", "[1] x"] {
            assert!(decode(raw, DataType::Int32, &[1]).is_err(), "{raw}");
        }
        let deep = "[".repeat(10_000) + &"]".repeat(10_000);
        assert!(decode(&deep, DataType::Int32, &[1]).is_err());
    }
}

#[cfg(test)]
mod fast_path_tests {
    use super::*;
    use proptest::prelude::*;

    /// Every datatype that holds numbers (all but BOOL and BYTES).
    fn numeric() -> Vec<DataType> {
        DataType::ALL
            .into_iter()
            .filter(|d| !matches!(d, DataType::Bool | DataType::Bytes))
            .collect()
    }

    #[test]
    fn a_literal_past_the_range_of_fp64_is_refused_on_both_paths() {
        assert_eq!(flat_numbers("[4E+535]", DataType::Fp64, 1), None);
        assert!(decode_any("[4E+535]", DataType::Fp64, &[1], 1).is_err());
    }

    /// Whenever the fast path answers, the general decoder gives the same bytes.
    fn agree(raw: &str, datatype: DataType, count: u64) {
        if let Some(fast) = flat_numbers(raw, datatype, count) {
            let general = decode_any(raw, datatype, &[count], count);
            assert_eq!(general.as_deref().ok(), Some(&fast[..]), "{datatype} {raw}");
        }
    }

    proptest! {
        #[test]
        fn fast_numbers_match_the_general_decoder(
            values in proptest::collection::vec(any::<f64>(), 0..20),
            style in 0..4usize,
            datatype in proptest::sample::select(numeric()),
        ) {
            let tokens: Vec<String> = values
                .iter()
                .filter(|v| v.is_finite())
                .map(|v| match style {
                    0 => zmij::Buffer::new().format_finite(*v).to_string(),
                    1 => format!("{v:e}"),
                    2 => format!("{}", (*v as i64)),
                    _ => format!("{:.3}", v / 1e300),
                })
                .collect();
            let raw = format!("[ {} ]", tokens.join(" ,\n"));
            agree(&raw, datatype, tokens.len() as u64);
        }

        #[test]
        fn number_like_junk_never_differs(token in "[-+0-9.eE]{1,12}", datatype in proptest::sample::select(numeric())) {
            agree(&format!("[{token}]"), datatype, 1);
        }
    }

    #[test]
    fn fast_path_takes_the_common_case_and_leaves_the_rest() {
        assert!(flat_numbers("[1, 2.5, -3e2]", DataType::Fp32, 3).is_some());
        assert!(
            flat_numbers("[[1, 2]]", DataType::Fp32, 2).is_none(),
            "nested"
        );
        assert!(flat_numbers("[1, 2]", DataType::Fp32, 3).is_none(), "count");
        assert!(flat_numbers("[300]", DataType::Uint8, 1).is_none(), "range");
        assert!(
            flat_numbers("[-0]", DataType::Fp32, 1).is_none(),
            "serde's -0"
        );
        assert!(
            flat_numbers("[01]", DataType::Int32, 1).is_none(),
            "not JSON"
        );
        assert!(
            flat_numbers("[1.]", DataType::Fp64, 1).is_none(),
            "not JSON"
        );
        assert!(flat_numbers("[true]", DataType::Bool, 1).is_none());
        assert_eq!(flat_numbers(" [ ] ", DataType::Int8, 0), Some(vec![]));
    }
}
