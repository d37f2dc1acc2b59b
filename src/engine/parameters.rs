//! Infer parameters: the one model every door converts its wire parameters into (REST's JSON
//! values, gRPC's `InferParameter`), their typed reads, and which parameters tensord acts on.
//! Any other is refused, never ignored: Triton hands unknown ("custom") parameters to its
//! backend, but no tensord model reads one. Triton's reserved priority parameter is accepted
//! only at its value that means "not set" (0), since tensord has no priority levels.

use std::borrow::Cow;

use super::Error;

#[derive(Clone, Debug, PartialEq)]
pub enum ParamValue<'a> {
    Bool(bool),
    Int(i64),
    Uint(u64),
    Float(f64),
    Str(Cow<'a, str>),
}

impl ParamValue<'_> {
    /// 0, "" or false: the value that means "not set".
    fn is_unset(&self) -> bool {
        match self {
            ParamValue::Bool(b) => !b,
            ParamValue::Int(v) => *v == 0,
            ParamValue::Uint(v) => *v == 0,
            ParamValue::Float(v) => *v == 0.0,
            ParamValue::Str(s) => s.is_empty(),
        }
    }
}

/// One place's parameters (a request's, an input's, an output's), in the order sent.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Parameters<'a>(pub Vec<(Cow<'a, str>, ParamValue<'a>)>);

impl<'a> Parameters<'a> {
    pub fn get(&self, key: &str) -> Option<&ParamValue<'a>> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Refuses any parameter `place` ("request", "input 'A'", ...; made only for an error)
    /// does not take: `known` lists what it takes.
    pub fn check(&self, place: impl Fn() -> String, known: &[&str]) -> Result<(), Error> {
        for (key, value) in &self.0 {
            check(&place, key, value.is_unset(), known)?;
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

    /// `sequence_id` (an unsigned integer or a string; 0 and "" mean none), `sequence_start` and
    /// `sequence_end`.
    pub fn sequence(&self) -> Result<super::SequenceFlags, Error> {
        use super::CorrelationId;
        let id = match self.get("sequence_id") {
            None => None,
            Some(ParamValue::Uint(0) | ParamValue::Int(0)) => None,
            Some(ParamValue::Uint(n)) => Some(CorrelationId::Number(*n)),
            Some(ParamValue::Int(n)) if *n > 0 => Some(CorrelationId::Number(*n as u64)),
            Some(ParamValue::Str(s)) if s.is_empty() => None,
            Some(ParamValue::Str(s)) => Some(CorrelationId::Text(s.to_string())),
            Some(other) => {
                return Err(Error::invalid(format!(
                    "parameter 'sequence_id' must be an unsigned integer or a string, got {other:?}"
                )))
            }
        };
        Ok(super::SequenceFlags {
            id,
            start: self.get_bool("sequence_start")?.unwrap_or(false),
            end: self.get_bool("sequence_end")?.unwrap_or(false),
        })
    }

    /// The `timeout` parameter (microseconds). Triton reads 0 as "no timeout" (its test helpers
    /// send it on every request).
    pub fn timeout(&self) -> Result<Option<std::time::Duration>, Error> {
        Ok(self
            .get_u64("timeout")?
            .filter(|&us| us > 0)
            .map(std::time::Duration::from_micros))
    }
}

/// Known parameters of each place in an infer request, by door.
pub struct Known {
    pub request: &'static [&'static str],
    pub input: &'static [&'static str],
    pub output: &'static [&'static str],
}

pub const FINAL_RESPONSE: &str = "triton_enable_empty_final_response";

const SEQUENCE: [&str; 3] = ["sequence_id", "sequence_start", "sequence_end"];

const SHM: [&str; 3] = super::SHARED_MEMORY_PARAMETERS;

pub const V2_REST: Known = Known {
    request: &[
        "timeout",
        "binary_data_output",
        SEQUENCE[0],
        SEQUENCE[1],
        SEQUENCE[2],
    ],
    input: &["binary_data_size", SHM[0], SHM[1], SHM[2]],
    output: &["binary_data", "classification", SHM[0], SHM[1], SHM[2]],
};

/// `triton_enable_empty_final_response` (perf_analyzer sends it on every call): every tensord
/// response is its request's final one, so none is ever due; a streamed response says it is
/// final (`triton_final_response`) when the request asked.
pub const V2_GRPC: Known = Known {
    request: &[
        "timeout",
        FINAL_RESPONSE,
        SEQUENCE[0],
        SEQUENCE[1],
        SEQUENCE[2],
    ],
    input: &["binary_data_size", SHM[0], SHM[1], SHM[2]],
    output: &["classification", "binary_data", SHM[0], SHM[1], SHM[2]],
};

const UNSET_AT_DEFAULT: &[(&str, &str)] = &[
    ("priority", "tensord models have no priority levels"),
    (
        FINAL_RESPONSE,
        "only a gRPC stream marks its final responses",
    ),
];

/// Checks one parameter `key` of `place`, where `unset` says its value is 0, "" or false.
fn check(
    place: impl FnOnce() -> String,
    key: &str,
    unset: bool,
    known: &[&str],
) -> Result<(), Error> {
    if known.contains(&key) {
        return Ok(());
    }
    let why =
        match UNSET_AT_DEFAULT.iter().find(|(k, _)| *k == key) {
            Some(_) if unset => return Ok(()),
            Some((_, why)) => format!("{why} (only 0, \"\" or false is accepted)"),
            None => {
                format!(
            "not supported: no tensord model reads it, and parameters are refused rather than \
             ignored (this takes: {})",
            if known.is_empty() { "none".to_string() } else { known.join(", ") }
        )
            }
        };
    Err(Error::invalid(format!(
        "{} parameter '{key}': {why}",
        place()
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_pass_reserved_pass_unset_and_the_rest_are_refused() {
        let request = || "request".to_string();
        assert!(check(request, "timeout", false, V2_REST.request).is_ok());
        assert!(check(request, "sequence_id", false, V2_REST.request).is_ok());
        assert!(check(request, "priority", true, V2_REST.request).is_ok());
        let e = check(request, "priority", false, V2_REST.request).unwrap_err();
        assert_eq!(
            e.message,
            "request parameter 'priority': tensord models have no priority levels (only 0, \"\" \
             or false is accepted)"
        );
        let e = check(|| "output 'C'".into(), "my_custom", false, V2_REST.output).unwrap_err();
        assert!(
            e.message
                .starts_with("output 'C' parameter 'my_custom': not supported")
                && e.message.ends_with(
                    "(this takes: binary_data, classification, shared_memory_region, \
                     shared_memory_offset, shared_memory_byte_size)"
                ),
            "{}",
            e.message
        );
        let e = check(|| "input 'A'".into(), "scale", false, V2_GRPC.input).unwrap_err();
        assert!(
            e.message.ends_with(
                "takes: binary_data_size, shared_memory_region, \
                 shared_memory_offset, shared_memory_byte_size)"
            ),
            "{}",
            e.message
        );
    }
}
