//! `parameters` objects as JSON carries them: string keys to bool, number or string values,
//! read into the engine's parameter model.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

use crate::engine::{ParamValue, Parameters};

impl<'de: 'a, 'a> Deserialize<'de> for Parameters<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(ParametersVisitor)
    }
}

struct ParametersVisitor;

impl<'de> Visitor<'de> for ParametersVisitor {
    type Value = Parameters<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object of parameters")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut params = Vec::new();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            params.push((key, map.next_value::<ParamValue<'de>>()?));
        }
        Ok(Parameters(params))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for ParamValue<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ParamValueVisitor)
    }
}

struct ParamValueVisitor;

impl<'de> Visitor<'de> for ParamValueVisitor {
    type Value = ParamValue<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a parameter value: boolean, number or string")
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
        Ok(ParamValue::Bool(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
        Ok(ParamValue::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
        Ok(ParamValue::Uint(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
        Ok(ParamValue::Float(v))
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(ParamValue::Str(Cow::Borrowed(v)))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(ParamValue::Str(Cow::Owned(v.to_string())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typed_lookups() {
        let p: Parameters = serde_json::from_str(
            r#"{"binary_data_size": 64, "binary_data": true, "s": "x", "n": -1}"#,
        )
        .unwrap();
        assert_eq!(p.get_u64("binary_data_size").unwrap(), Some(64));
        assert_eq!(p.get_bool("binary_data").unwrap(), Some(true));
        assert_eq!(p.get_bool("missing").unwrap(), None);
        assert_eq!(
            p.get_u64("n").unwrap_err().kind,
            crate::engine::ErrorKind::Invalid
        );
        assert_eq!(
            p.get_bool("s").unwrap_err().kind,
            crate::engine::ErrorKind::Invalid
        );
        assert!(serde_json::from_str::<Parameters>(r#"{"a": [1]}"#).is_err());
    }
}
