//! How a model input wants its images: OVMS's defaults, plus opt-in conversions.

use serde::{Deserialize, Serialize};

/// Per-input image settings (`[input.image]` in a model's config.toml). The defaults are
/// OVMS's behaviour: BGR, no conversion between channel counts, no normalisation, stretch.
#[derive(Clone, Debug, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ImageOptions {
    #[serde(default)]
    pub color: ColorOrder,
    /// Grayscale becomes 3 channels and RGBA loses its alpha, instead of a channel error.
    #[serde(default)]
    pub convert_channels: bool,
    /// Per channel (model order): value = (pixel * scale - mean) / std.
    #[serde(default)]
    pub mean: Vec<f32>,
    #[serde(default)]
    pub std: Vec<f32>,
    #[serde(default)]
    pub scale: Option<f32>,
    #[serde(default)]
    pub resize: ResizeMode,
    /// The pixel value letterbox padding gets, before normalisation like every pixel (so with
    /// `mean`/`std` it arrives as (pad × scale − mean) / std). YOLO-style models pad with 114.
    #[serde(default)]
    pub pad: f32,
    /// Apply a JPEG's EXIF orientation before anything else.
    #[serde(default)]
    pub exif_orientation: bool,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ColorOrder {
    #[default]
    Bgr,
    Rgb,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ResizeMode {
    /// To H×W exactly, aspect ratio not kept (OVMS).
    #[default]
    Stretch,
    /// Scaled to fit inside H×W, aspect kept, the rest padded with `pad` (centred).
    Letterbox,
    /// Scaled to cover H×W, aspect kept, the middle cut out.
    CenterCrop,
}

impl ImageOptions {
    /// Checks the options against the input's channel count; the error names the offending
    /// field (`mean`, `std`) so the caller can name the whole key.
    pub fn validate(&self, channels: usize) -> Result<(), (&'static str, String)> {
        for (field, values) in [("mean", &self.mean), ("std", &self.std)] {
            if !values.is_empty() && values.len() != channels {
                return Err((
                    field,
                    format!("{} values for {channels} channels", values.len()),
                ));
            }
        }
        if self.std.contains(&0.0) {
            return Err(("std", "a zero would divide by zero".into()));
        }
        Ok(())
    }

    pub fn normalizes(&self) -> bool {
        !self.mean.is_empty() || !self.std.is_empty() || self.scale.is_some()
    }
}
