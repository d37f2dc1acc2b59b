//! Which fields of Triton's model config tensord reads, message by message. A field outside
//! them is refused with its path: a typo as an unknown key, a Triton setting tensord does not
//! implement as such (an operator relying on it must not get silence). A few Triton settings
//! are accepted at the one value tensord behaves as, which its own config documents write, so
//! a config read back from `/config` loads again.

use super::pbtxt::{Fields, Value};

/// (the fields tensord reads, the fields accepted at one value only)
type Schema = (
    &'static [&'static str],
    &'static [(&'static str, &'static str)],
);

fn schema(path: &str) -> Option<Schema> {
    Some(match path {
        "" => (
            &[
                "name",
                "platform",
                "backend",
                "max_batch_size",
                "input",
                "output",
                "instance_group",
                "version_policy",
                "default_model_filename",
                "dynamic_batching",
                "parameters",
                "optimization",
            ],
            &[],
        ),
        "input" => (
            &["name", "data_type", "format", "dims", "reshape"],
            &[
                ("is_shape_tensor", "false"),
                ("allow_ragged_batch", "false"),
                ("optional", "false"),
            ],
        ),
        "output" => (
            &["name", "data_type", "dims", "reshape", "label_filename"],
            &[("is_shape_tensor", "false")],
        ),
        "input.reshape" | "output.reshape" => (&["shape"], &[]),
        "instance_group" => (&["name", "kind", "count", "gpus"], &[("passive", "false")]),
        "dynamic_batching" => (
            &[
                "preferred_batch_size",
                "max_queue_delay_microseconds",
                "default_queue_policy",
            ],
            &[
                ("preserve_ordering", "false"),
                ("priority_levels", "0"),
                ("default_priority_level", "0"),
            ],
        ),
        "dynamic_batching.default_queue_policy" => (
            &["max_queue_size"],
            &[
                ("timeout_action", "REJECT"),
                ("default_timeout_microseconds", "0"),
                ("allow_timeout_override", "true"),
            ],
        ),
        "version_policy" => (&["latest", "all", "specific"], &[]),
        "version_policy.latest" => (&["num_versions"], &[]),
        "version_policy.all" => (&[], &[]),
        "version_policy.specific" => (&["versions"], &[]),
        "parameters" => (&["key", "value"], &[]),
        "parameters.value" => (&["string_value"], &[]),
        "optimization" => (&["graph", "execution_accelerators"], &[]),
        "optimization.graph" => (&["level"], &[]),
        "optimization.execution_accelerators" => (
            &["gpu_execution_accelerator", "cpu_execution_accelerator"],
            &[],
        ),
        // Its `parameters` are refused where the accelerators are read.
        "optimization.execution_accelerators.gpu_execution_accelerator"
        | "optimization.execution_accelerators.cpu_execution_accelerator" => {
            (&["name", "parameters"], &[])
        }
        _ => return None,
    })
}

/// Triton's own fields that tensord does not implement (the rest of an unknown path is a typo).
const TRITON_ONLY: &[&str] = &[
    "runtime",
    "sequence_batching",
    "ensemble_scheduling",
    "batch_input",
    "batch_output",
    "cc_model_filenames",
    "metric_tags",
    "model_warmup",
    "model_operations",
    "model_transaction_policy",
    "model_repository_agents",
    "response_cache",
    "instance_group.profile",
    "instance_group.rate_limiter",
    "instance_group.host_policy",
    "instance_group.secondary_devices",
    "dynamic_batching.priority_queue_policy",
    "optimization.priority",
    "optimization.cuda",
    "optimization.input_pinned_memory",
    "optimization.output_pinned_memory",
    "optimization.gather_kernel_buffer_threshold",
    "optimization.eager_batching",
];

/// Refuses the first field of `fields` (a message at `path`, "" for the config itself) that
/// tensord does not read.
pub fn check(fields: &Fields, path: &str) -> Result<(), String> {
    let Some((known, fixed)) = schema(path) else {
        return Ok(());
    };
    for (key, value) in fields {
        let here = match path {
            "" => key.to_string(),
            _ => format!("{path}.{key}"),
        };
        if known.contains(&key.as_str()) {
            if let Value::Message(inner) = value {
                check(inner, &here)?;
            }
            continue;
        }
        if let Some((_, only)) = fixed.iter().find(|(k, _)| k == key) {
            if matches!(value, Value::Scalar(v) if v == only) {
                continue;
            }
            return Err(format!(
                "key '{here}': tensord implements only {only} (this Triton setting is refused \
                 rather than ignored)"
            ));
        }
        return Err(match TRITON_ONLY.contains(&here.as_str()) {
            true => format!(
                "key '{here}': a Triton setting tensord does not implement (refused rather than \
                 ignored)"
            ),
            false => format!("key '{here}': unknown key"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::models::{config_from_json, pbtxt::config_from_pbtxt};

    #[test]
    fn fields_tensord_does_not_read_are_refused_with_their_path() {
        let err = |text: &str| config_from_pbtxt(text).unwrap_err();
        let base = "backend: \"identity\"\n";
        assert_eq!(
            err(&format!("{base}max_batch_sise: 8")),
            "key 'max_batch_sise': unknown key"
        );
        for triton in [
            "sequence_batching { }",
            "ensemble_scheduling { }",
            "model_repository_agents { }",
            "model_warmup [ { name: \"w\" } ]",
            "dynamic_batching { priority_queue_policy { } }",
        ] {
            let e = err(&format!("{base}{triton}"));
            assert!(
                e.contains("a Triton setting tensord does not implement"),
                "{triton}: {e}"
            );
        }
        let e = err(&format!(
            "{base}dynamic_batching {{ preserve_ordering: true }}"
        ));
        assert!(
            e.starts_with(
                "key 'dynamic_batching.preserve_ordering': tensord implements only false"
            ),
            "{e}"
        );
        let e = err(&format!(
            "{base}input [ {{ name: \"a\" data_type: TYPE_FP32 dims: [ 1 ] dim: [ 2 ] }} ]"
        ));
        assert_eq!(e, "key 'input.dim': unknown key");
        // The values tensord's own /config writes load again.
        let written = r#"{"backend": "identity", "max_batch_size": 4, "dynamic_batching": {
            "preferred_batch_size": [], "max_queue_delay_microseconds": 0, "preserve_ordering": false,
            "priority_levels": 0, "default_priority_level": 0, "default_queue_policy": {
            "timeout_action": "REJECT", "default_timeout_microseconds": 0,
            "allow_timeout_override": true, "max_queue_size": 0}}}"#;
        assert_eq!(config_from_json(written).unwrap().max_batch_size, 4);
    }
}
