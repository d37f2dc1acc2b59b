//! Binary image inputs, OVMS-style: a BYTES [N] input of JPEG/PNG images sent to a model input
//! with 4 dims becomes the model's tensor (NHWC, or NCHW when the input's layout says so),
//! decoded to BGR (by default) and converted to the input's datatype without scaling, resized
//! (bilinear) when the model's H×W is fixed and differs.

mod decode;
mod options;
mod transform;

use half::{bf16, f16};
use rayon::prelude::*;
use zune_core::colorspace::ColorSpace;

use crate::tensors::{element_count, DataType, Tensor};
pub use options::{ColorOrder, ImageOptions, ResizeMode};
use transform::{fit, normalize, Decoded, Plane};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    Nhwc,
    Nchw,
}

/// What one request's images may cost, checked from their headers before any is decoded.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// The most elements the decoded tensor may have.
    pub max_elements: u64,
    /// The most pixels one image may have (its header's width × height).
    pub max_image_pixels: u64,
    /// The most pixels of all the images of one input together.
    pub max_request_pixels: u64,
}

impl Budget {
    /// No limit (benchmarks).
    pub const UNLIMITED: Budget = Budget {
        max_elements: u64::MAX,
        max_image_pixels: u64::MAX,
        max_request_pixels: u64::MAX,
    };
}

/// What a model input expects of images.
#[derive(Debug)]
pub struct ImageTarget {
    pub datatype: DataType,
    pub layout: Layout,
    /// -1: any number of images.
    pub batch: i64,
    /// -1: the images' own size (then all must match), clamped into the range when one is given.
    pub height: i64,
    pub width: i64,
    pub height_range: Option<(u64, u64)>,
    pub width_range: Option<(u64, u64)>,
    pub channels: usize,
    pub options: ImageOptions,
}

impl ImageTarget {
    /// The image target of a model input with these dims, or `None` when it takes no images
    /// (not 4 dims, or BYTES, or a datatype pixels cannot be stored in).
    pub fn of(
        datatype: DataType,
        dims: &[i64],
        ranges: &[Option<(u64, u64)>],
        layout: Option<&str>,
        options: &ImageOptions,
    ) -> Option<Self> {
        let &[n, a, b, c] = dims else {
            return None;
        };
        let range = |d: usize| ranges.get(d).copied().flatten();
        let pixel_type = matches!(
            datatype,
            DataType::Uint8
                | DataType::Int8
                | DataType::Uint16
                | DataType::Int16
                | DataType::Int32
                | DataType::Fp16
                | DataType::Bf16
                | DataType::Fp32
                | DataType::Fp64
        );
        if !pixel_type {
            return None;
        }
        let (layout, height, width, channels, (h, w)) = match layout {
            Some(l) if l.eq_ignore_ascii_case("NCHW") => (Layout::Nchw, b, c, a, (2, 3)),
            _ => (Layout::Nhwc, a, b, c, (1, 2)),
        };
        Some(ImageTarget {
            datatype,
            layout,
            batch: n,
            height,
            width,
            height_range: range(h),
            width_range: range(w),
            channels: usize::try_from(channels).ok().filter(|&c| c > 0)?,
            options: options.clone(),
        })
    }

    fn shape(&self, n: usize, height: usize, width: usize) -> Vec<u64> {
        let (n, h, w, c) = (n as u64, height as u64, width as u64, self.channels as u64);
        match self.layout {
            Layout::Nhwc => vec![n, h, w, c],
            Layout::Nchw => vec![n, c, h, w],
        }
    }
}

/// Whether decoding `input` is worth moving off an io thread.
pub fn is_heavy(input: &Tensor) -> bool {
    input.shape.first().is_some_and(|&n| n > 1) || input.data.len() > 64 * 1024
}

/// Decodes the images of a BYTES [N] tensor into the target's tensor. Errors name the image.
/// Each image's header is read, and the pixel budget checked, before any image is decoded.
pub fn decode_images(
    input: &Tensor,
    target: &ImageTarget,
    budget: &Budget,
) -> Result<Tensor, String> {
    let images: Vec<&[u8]> = input.bytes_elements().collect();
    if images.is_empty() {
        return Err("no images in the input".into());
    }
    if target.batch >= 0 && images.len() as i64 != target.batch {
        return Err(format!(
            "{} images for a model batch of {}",
            images.len(),
            target.batch
        ));
    }
    let orientations: Vec<u16> = images
        .iter()
        .map(|data| match target.options.exif_orientation {
            true => decode::jpeg_orientation(data),
            false => 1,
        })
        .collect();
    let mut sizes = Vec::with_capacity(images.len());
    let mut native_channels = Vec::with_capacity(images.len());
    let mut pixels = 0u64;
    for (i, data) in images.iter().enumerate() {
        let (w, h, c) = decode::probe(data).map_err(|e| format!("image {i}: {e}"))?;
        let own = (w as u64).saturating_mul(h as u64);
        if own > budget.max_image_pixels {
            return Err(format!(
                "image {i} is {w}x{h}, {own} pixels: over the limit of {} pixels per image \
                 (--max-image-pixels)",
                budget.max_image_pixels
            ));
        }
        pixels += own;
        if pixels > budget.max_request_pixels {
            return Err(format!(
                "images 0 to {i} have {pixels} pixels together: over the limit of {} pixels per \
                 request (--max-request-pixels)",
                budget.max_request_pixels
            ));
        }
        sizes.push(if orientations[i] >= 5 { (h, w) } else { (w, h) });
        native_channels.push(c);
    }
    // Each axis: the model's fixed size, else the image's own clamped into the range (OVMS:
    // the nearer bound), else the image's own.
    let axis = |fixed: i64, range: Option<(u64, u64)>, own: usize| match (fixed, range) {
        (f, _) if f > 0 => f as usize,
        (_, Some((lo, hi))) => own.clamp(lo as usize, hi as usize),
        _ => own,
    };
    let out_size = |&(w, h): &(usize, usize)| {
        (
            axis(target.width, target.width_range, w),
            axis(target.height, target.height_range, h),
        )
    };
    let (width, height) = out_size(&sizes[0]);
    if let Some((i, &(w, h))) = sizes
        .iter()
        .enumerate()
        .find(|(_, s)| out_size(s) != (width, height))
    {
        let (w0, h0) = sizes[0];
        return Err(format!(
            "image {i} is {w}x{h} but image 0 is {w0}x{h0}: the model input has no fixed size, \
             so all images of a request must match"
        ));
    }
    let shape = target.shape(images.len(), height, width);
    element_count(&shape, budget.max_elements).map_err(|e| e.to_string())?;
    let size = target.datatype.element_size().unwrap_or(1);
    let per_image = height * width * target.channels * size;
    let mut data = vec![0u8; per_image * images.len()];
    let work = |(i, out): (usize, &mut [u8])| -> Result<(), String> {
        fill(
            images[i],
            sizes[i],
            native_channels[i],
            orientations[i],
            (width, height),
            target,
            out,
        )
        .map_err(|e| format!("image {i}: {e}"))
    };
    if images.len() > 1 {
        data.par_chunks_mut(per_image)
            .enumerate()
            .try_for_each(work)?;
    } else {
        work((0, &mut data[..]))?;
    }
    Ok(Tensor {
        datatype: target.datatype,
        shape,
        data: data.into(),
    })
}

/// Decodes one image into its slot of the output tensor.
fn fill(
    data: &[u8],
    size: (usize, usize),
    native_channels: usize,
    orientation: u16,
    (width, height): (usize, usize),
    target: &ImageTarget,
    out: &mut [u8],
) -> Result<(), String> {
    let options = &target.options;
    let direct = target.datatype == DataType::Uint8
        && target.layout == Layout::Nhwc
        && target.channels == 3
        && size == (width, height)
        && orientation == 1
        && !options.normalizes()
        && decode::format_of(data)? == decode::Format::Jpeg
        && native_channels == 3;
    if direct {
        // The common case needs no intermediate image: decode straight into the tensor.
        let colorspace = match options.color {
            ColorOrder::Bgr => ColorSpace::BGR,
            ColorOrder::Rgb => ColorSpace::RGB,
        };
        return decode::jpeg_into(data, colorspace, out);
    }
    let pixels = decode::decode(data)?;
    let eight_bit = matches!(target.datatype, DataType::Uint8 | DataType::Int8);
    // The resize reads the samples through the view a row at a time: no full-size f32 copy
    // (2560x1920 to 224x224 in 7 ms, not 64; 640x480 in 2.6 ms, not 3.2).
    let view = Decoded::new(&pixels, target.channels, options, eight_bit, orientation)?;
    let mut plane = fit(&view, width, height, options.resize, options.pad);
    normalize(&mut plane, options);
    store(&plane, target, out);
    Ok(())
}

/// Writes a plane into a tensor slot: the target's datatype (rounded and saturated for
/// integers, as OpenCV's convertTo does) and layout.
fn store(plane: &Plane, target: &ImageTarget, out: &mut [u8]) {
    let (w, h, c) = (plane.width, plane.height, plane.channels);
    // Position of the k-th value of the HWC plane in the output, in elements.
    let position = |k: usize| match target.layout {
        Layout::Nhwc => k,
        Layout::Nchw => {
            let (pixel, ch) = (k / c, k % c);
            ch * h * w + pixel
        }
    };
    macro_rules! put {
        ($t:ty, $conv:expr) => {{
            const SIZE: usize = std::mem::size_of::<$t>();
            for (k, &v) in plane.values.iter().enumerate() {
                let value: $t = $conv(v);
                let at = position(k) * SIZE;
                out[at..at + SIZE].copy_from_slice(&value.to_le_bytes());
            }
        }};
    }
    match target.datatype {
        DataType::Uint8 => put!(u8, |v: f32| v.round().clamp(0.0, 255.0) as u8),
        DataType::Int8 => put!(i8, |v: f32| v.round().clamp(-128.0, 127.0) as i8),
        DataType::Uint16 => put!(u16, |v: f32| v.round().clamp(0.0, 65535.0) as u16),
        DataType::Int16 => put!(i16, |v: f32| v.round().clamp(-32768.0, 32767.0) as i16),
        DataType::Int32 => put!(i32, |v: f32| v.round() as i32),
        DataType::Fp16 => put!(f16, f16::from_f32),
        DataType::Bf16 => put!(bf16, bf16::from_f32),
        DataType::Fp64 => put!(f64, f64::from),
        _ => put!(f32, |v: f32| v),
    }
}
