//! JPEG (zune-jpeg) and PNG (zune-png) to pixels in their native channel order (gray, gray+alpha,
//! RGB, RGBA), 8 or 16 bits per sample.

use zune_core::bytestream::ZCursor;
use zune_core::colorspace::ColorSpace;
use zune_core::options::DecoderOptions;
use zune_core::result::DecodingResult;
use zune_jpeg::JpegDecoder;
use zune_png::PngDecoder;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    Jpeg,
    Png,
}

/// Decoded samples, row-major, `channels` per pixel.
#[derive(Debug)]
pub enum Samples {
    U8(Vec<u8>),
    U16(Vec<u16>),
}

#[derive(Debug)]
pub struct Pixels {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub samples: Samples,
}

fn corrupt(format: &str, error: impl std::fmt::Debug) -> String {
    format!(
        "corrupt or truncated {format}: {}",
        format!("{error:?}").trim()
    )
}

pub fn format_of(data: &[u8]) -> Result<Format, String> {
    if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Ok(Format::Jpeg)
    } else if data.starts_with(b"\x89PNG\r\n\x1a\n") {
        Ok(Format::Png)
    } else if data.is_empty() {
        Err("empty image data".into())
    } else {
        Err("unsupported image format (JPEG and PNG are)".into())
    }
}

/// Width, height and native channels, from the headers alone.
pub fn probe(data: &[u8]) -> Result<(usize, usize, usize), String> {
    match format_of(data)? {
        Format::Jpeg => {
            let mut d = JpegDecoder::new(ZCursor::new(data));
            d.decode_headers().map_err(|e| corrupt("JPEG", e))?;
            let info = d
                .info()
                .ok_or("corrupt or truncated JPEG: no frame header")?;
            let channels = if info.components == 1 { 1 } else { 3 };
            Ok((usize::from(info.width), usize::from(info.height), channels))
        }
        Format::Png => {
            let mut d = PngDecoder::new(ZCursor::new(data));
            d.decode_headers().map_err(|e| corrupt("PNG", e))?;
            let (w, h) = d
                .dimensions()
                .ok_or("corrupt or truncated PNG: no header")?;
            let channels = d.colorspace().map_or(3, |c| c.num_components());
            Ok((w, h, channels))
        }
    }
}

/// Decodes a JPEG straight into `out` in `colorspace` (BGR or RGB, 8 bits); `out` must be
/// exactly width × height × 3.
pub fn jpeg_into(data: &[u8], colorspace: ColorSpace, out: &mut [u8]) -> Result<(), String> {
    let options = DecoderOptions::default().jpeg_set_out_colorspace(colorspace);
    let mut d = JpegDecoder::new_with_options(ZCursor::new(data), options);
    d.decode_headers().map_err(|e| corrupt("JPEG", e))?;
    if d.output_buffer_size() != Some(out.len()) {
        return Err("JPEG size differs from its header".into());
    }
    d.decode_into(out).map_err(|e| corrupt("JPEG", e))
}

pub fn decode(data: &[u8]) -> Result<Pixels, String> {
    match format_of(data)? {
        Format::Jpeg => {
            let (width, height, channels) = probe(data)?;
            let colorspace = if channels == 1 {
                ColorSpace::Luma
            } else {
                ColorSpace::RGB
            };
            let options = DecoderOptions::default().jpeg_set_out_colorspace(colorspace);
            let mut d = JpegDecoder::new_with_options(ZCursor::new(data), options);
            let pixels = d.decode().map_err(|e| corrupt("JPEG", e))?;
            Ok(Pixels {
                width,
                height,
                channels,
                samples: Samples::U8(pixels),
            })
        }
        Format::Png => {
            let mut d = PngDecoder::new(ZCursor::new(data));
            let result = d.decode().map_err(|e| corrupt("PNG", e))?;
            let (width, height) = d
                .dimensions()
                .ok_or("corrupt or truncated PNG: no header")?;
            let channels = d.colorspace().map_or(3, |c| c.num_components());
            let samples = match result {
                DecodingResult::U8(v) => Samples::U8(v),
                DecodingResult::U16(v) => Samples::U16(v),
                _ => return Err("unsupported PNG sample type".into()),
            };
            Ok(Pixels {
                width,
                height,
                channels,
                samples,
            })
        }
    }
}

/// The EXIF orientation (1..=8) of a JPEG, 1 when it has none.
pub fn jpeg_orientation(data: &[u8]) -> u16 {
    let mut d = JpegDecoder::new(ZCursor::new(data));
    if d.decode_headers().is_err() {
        return 1;
    }
    d.exif()
        .and_then(|exif| exif_orientation(exif))
        .unwrap_or(1)
}

/// Reads tag 0x0112 from the first IFD of an EXIF (TIFF) block.
fn exif_orientation(exif: &[u8]) -> Option<u16> {
    let start = exif
        .windows(4)
        .position(|w| w == b"II*\0" || w == b"MM\0*")?;
    let tiff = &exif[start..];
    let little = tiff[0] == b'I';
    let u16_at = |at: usize| -> Option<u16> {
        let b: [u8; 2] = tiff.get(at..at + 2)?.try_into().ok()?;
        Some(if little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        })
    };
    let u32_at = |at: usize| -> Option<u32> {
        let b: [u8; 4] = tiff.get(at..at + 4)?.try_into().ok()?;
        Some(if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        })
    };
    let ifd = u32_at(4)? as usize;
    let entries = u16_at(ifd)? as usize;
    (0..entries)
        .map(|i| ifd + 2 + i * 12)
        .find(|&entry| u16_at(entry) == Some(0x0112))
        .and_then(|entry| u16_at(entry + 8))
        .filter(|o| (1..=8).contains(o))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_exif() {
        assert_eq!(format_of(b"\xFF\xD8\xFF\xE0").unwrap(), Format::Jpeg);
        assert!(format_of(b"GIF89a").unwrap_err().contains("unsupported"));
        assert!(format_of(b"").unwrap_err().contains("empty"));
        // A little-endian TIFF with one IFD entry: orientation 6.
        let mut exif = b"Exif\0\0II*\0\x08\0\0\0\x01\0".to_vec();
        exif.extend_from_slice(&[0x12, 0x01, 3, 0, 1, 0, 0, 0, 6, 0, 0, 0]);
        assert_eq!(exif_orientation(&exif), Some(6));
        assert_eq!(exif_orientation(b"Exif\0\0junk"), None);
        assert!(decode(b"\xFF\xD8\xFF\xE0\0\x10JFIF").is_err());
        assert!(decode(b"\x89PNG\r\n\x1a\n\0\0").is_err());
    }
}
