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
        macro_rules! int {
            ($t:ty) => {
                match <$t>::try_from(v) {
                    Ok(x) => self.out.extend_from_slice(&x.to_le_bytes()),
                    Err(_) => return Err(self.bad_value(v)),
                }
            };
        }
        match self.datatype {
            DataType::Int8 => int!(i8),
            DataType::Int16 => int!(i16),
            DataType::Int32 => int!(i32),
            DataType::Int64 => int!(i64),
            DataType::Uint8 => int!(u8),
            DataType::Uint16 => int!(u16),
            DataType::Uint32 => int!(u32),
            DataType::Uint64 => int!(u64),
            DataType::Fp16 | DataType::Bf16 | DataType::Fp32 | DataType::Fp64 => {
                return self.push_float_value(v as f64, &v)
            }
            DataType::Bool | DataType::Bytes => return Err(self.bad_value(v)),
        }
        Ok(())
    }

    fn push_float<E: de::Error>(&mut self, v: f64, depth: usize) -> Result<(), E> {
        self.scalar_at(depth)?;
        self.push_float_value(v, &v)
    }

    /// Writes `v` as the float datatype, refusing values its range cannot hold.
    fn push_float_value<E: de::Error>(
        &mut self,
        v: f64,
        shown: &dyn fmt::Display,
    ) -> Result<(), E> {
        let fits = match self.datatype {
            DataType::Fp16 => {
                let x = f16::from_f64(v);
                self.out.extend_from_slice(&x.to_le_bytes());
                x.is_finite()
            }
            DataType::Bf16 => {
                let x = bf16::from_f64(v);
                self.out.extend_from_slice(&x.to_le_bytes());
                x.is_finite()
            }
            DataType::Fp32 => {
                let x = v as f32;
                self.out.extend_from_slice(&x.to_le_bytes());
                x.is_finite()
            }
            DataType::Fp64 => {
                self.out.extend_from_slice(&v.to_le_bytes());
                true
            }
            _ => false,
        };
        if fits {
            Ok(())
        } else {
            Err(self.bad_value(shown))
        }
    }
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
            (DataType::Fp64, "[0.1,1e300]"),
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
