//! `parameters` objects: string keys to bool, number or string values.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};

use crate::engine::Error;

#[derive(Clone, Debug, PartialEq)]
pub enum ParamValue<'a> {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(Cow<'a, str>),
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parameters<'a>(pub Vec<(Cow<'a, str>, ParamValue<'a>)>);

impl<'a> Parameters<'a> {
    pub fn get(&self, key: &str) -> Option<&ParamValue<'a>> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Refuses any parameter `place` does not take (see `doors::parameters`).
    pub fn check(&self, place: impl Fn() -> String, known: &[&str]) -> Result<(), Error> {
        for (key, value) in &self.0 {
            let unset = match value {
                ParamValue::Bool(b) => !b,
                ParamValue::Int(v) => *v == 0,
                ParamValue::Uint(v) => *v == 0,
                ParamValue::Float(v) => *v == 0.0,
                ParamValue::Str(s) => s.is_empty(),
            };
            crate::doors::parameters::check(&place, key, unset, known)?;
        }
        Ok(())
    }

    /// A boolean parameter; present with another type is an error.
    pub fn get_bool(&self, key: &str) -> Result<Option<bool>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(ParamValue::Bool(b)) => Ok(Some(*b)),
            Some(other) => Err(Error::invalid(format!(
                "parameter '{key}' must be a boolean, got {other:?}"
            ))),
        }
    }

    /// A non-negative integer parameter; present with another type is an error.
    pub fn get_u64(&self, key: &str) -> Result<Option<u64>, Error> {
        match self.get(key) {
            None => Ok(None),
            Some(ParamValue::Uint(v)) => Ok(Some(*v)),
            Some(ParamValue::Int(v)) if *v >= 0 => Ok(Some(*v as u64)),
            Some(other) => Err(Error::invalid(format!(
                "parameter '{key}' must be a non-negative integer, got {other:?}"
            ))),
        }
    }
}

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
