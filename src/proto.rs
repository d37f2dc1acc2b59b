//! Protocol buffer schemas, generated from `proto/` by build.rs: Triton's model configuration,
//! the inference, health and TF Serving messages. Every layer may read them (the config is a
//! model's; the messages are the gRPC door's). Also their descriptors, behind protobuf's text
//! format and JSON mapping.

use std::sync::OnceLock;

use prost_reflect::{DescriptorPool, DynamicMessage, MessageDescriptor};

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod inference {
    include!(concat!(env!("OUT_DIR"), "/inference.rs"));
}

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod health {
    include!(concat!(env!("OUT_DIR"), "/grpc.health.v1.rs"));
}

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod tensorflow {
    include!(concat!(env!("OUT_DIR"), "/tensorflow.rs"));
    pub mod serving {
        include!(concat!(env!("OUT_DIR"), "/tensorflow.serving.rs"));
    }
}

/// The descriptor of message `name` (`inference.ModelConfig`).
pub fn descriptor(name: &str) -> Result<MessageDescriptor, String> {
    static POOL: OnceLock<DescriptorPool> = OnceLock::new();
    let pool = POOL.get_or_init(|| {
        let bytes = include_bytes!(concat!(env!("OUT_DIR"), "/descriptors.bin"));
        // build.rs wrote them from the very files the messages came from.
        #[allow(clippy::expect_used)]
        DescriptorPool::decode(&bytes[..]).expect("build.rs wrote valid descriptors")
    });
    pool.get_message_by_name(name)
        .ok_or_else(|| format!("no message '{name}' in proto/"))
}

/// Whether a JSON document writes the fields at their default value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defaults {
    Written,
    Left,
}

/// `message` (of type `name`) in protobuf's JSON mapping as Triton writes its documents: proto
/// field names, and 64-bit integers as numbers, not strings.
pub fn to_json(
    message: &impl prost::Message,
    name: &str,
    defaults: Defaults,
) -> Result<serde_json::Value, String> {
    let dynamic = DynamicMessage::decode(descriptor(name)?, message.encode_to_vec().as_slice())
        .map_err(|e| format!("{name}: {e}"))?;
    let options = prost_reflect::SerializeOptions::new()
        .use_proto_field_name(true)
        .skip_default_fields(defaults == Defaults::Left)
        .stringify_64_bit_integers(false);
    dynamic
        .serialize_with_options(serde_json::value::Serializer, &options)
        .map_err(|e| format!("{name}: {e}"))
}
