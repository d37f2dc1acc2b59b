//! Which infer parameters tensord acts on. Any other is refused, never ignored: Triton hands
//! unknown ("custom") parameters to its backend, but no tensord model reads one. Triton's
//! reserved sequence and priority parameters are accepted only at their value that means "not
//! set" (0, "" or false), since tensord has neither feature.

use crate::engine::Error;

/// Known parameters of each place in an infer request, by door.
pub struct Known {
    pub request: &'static [&'static str],
    pub input: &'static [&'static str],
    pub output: &'static [&'static str],
}

pub const FINAL_RESPONSE: &str = "triton_enable_empty_final_response";

pub const V2_REST: Known = Known {
    request: &["timeout", "binary_data_output"],
    input: &["binary_data_size"],
    output: &["binary_data", "classification"],
};

/// `triton_enable_empty_final_response` (perf_analyzer sends it on every call): every tensord
/// response is its request's final one, so none is ever due; a streamed response says it is
/// final (`triton_final_response`) when the request asked.
pub const V2_GRPC: Known = Known {
    request: &["timeout", FINAL_RESPONSE],
    input: &["binary_data_size"],
    output: &["classification", "binary_data"],
};

const UNSET_AT_DEFAULT: &[(&str, &str)] = &[
    ("sequence_id", "tensord has no sequence batching"),
    ("sequence_start", "tensord has no sequence batching"),
    ("sequence_end", "tensord has no sequence batching"),
    ("priority", "tensord models have no priority levels"),
    (
        FINAL_RESPONSE,
        "only a gRPC stream marks its final responses",
    ),
];

/// Checks one parameter `key` of `place` ("request", "input 'A'", ...; made only for an error),
/// where `known` lists what that place takes and `unset` says the value is 0, "" or false.
pub fn check(
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
        assert!(check(request, "sequence_id", true, V2_REST.request).is_ok());
        let e = check(request, "sequence_id", false, V2_REST.request).unwrap_err();
        assert_eq!(
            e.message,
            "request parameter 'sequence_id': tensord has no sequence batching (only 0, \"\" or \
             false is accepted)"
        );
        let e = check(|| "output 'C'".into(), "my_custom", false, V2_REST.output).unwrap_err();
        assert!(
            e.message
                .starts_with("output 'C' parameter 'my_custom': not supported")
                && e.message
                    .ends_with("(this takes: binary_data, classification)"),
            "{}",
            e.message
        );
        let e = check(|| "input 'A'".into(), "scale", false, V2_GRPC.input).unwrap_err();
        assert!(
            e.message.ends_with("takes: binary_data_size)"),
            "{}",
            e.message
        );
    }
}
