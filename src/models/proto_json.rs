//! A Triton config message kept as written: read from and written to protobuf's JSON mapping
//! (proto field names), which is also its form in `config.toml`.

use prost_reflect::DynamicMessage;
use serde::{Deserialize, Serialize};

use crate::proto::inference as pb;

/// A message of Triton's `ModelConfig` that tensord keeps whole.
pub trait Named: prost::Message + Default {
    const NAME: &'static str;
}

impl Named for pb::ModelSequenceBatching {
    const NAME: &'static str = "inference.ModelSequenceBatching";
}

impl Named for pb::ModelEnsembling {
    const NAME: &'static str = "inference.ModelEnsembling";
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Proto<M>(pub M);

impl<'de, M: Named> Deserialize<'de> for Proto<M> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let descriptor = crate::proto::descriptor(M::NAME).map_err(D::Error::custom)?;
        let message = DynamicMessage::deserialize(descriptor, d)?;
        message.transcode_to().map(Proto).map_err(D::Error::custom)
    }
}

impl<M: Named> Serialize for Proto<M> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::Error;
        let descriptor = crate::proto::descriptor(M::NAME).map_err(S::Error::custom)?;
        let mut message = DynamicMessage::new(descriptor);
        message.transcode_from(&self.0).map_err(S::Error::custom)?;
        let options = prost_reflect::SerializeOptions::new().use_proto_field_name(true);
        message.serialize_with_options(s, &options)
    }
}
