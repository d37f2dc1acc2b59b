//! Pixels to model values: orientation, channel order and count, bilinear resize, normalisation.
//! Works on f32 HWC planes; the store into the tensor's datatype and layout is in `mod.rs`. A
//! resize reads the decoded samples through a view (`Decoded`) that orients and converts the
//! two rows it reads at a time, so no image exists as a full-size f32 plane (four times its
//! 8-bit samples): the only f32 plane is the output's.

use super::decode::{Pixels, Samples};
use super::options::{ColorOrder, ImageOptions, ResizeMode};

/// An image as f32 values, height × width × channels.
#[derive(Debug)]
pub struct Plane {
    pub width: usize,
    pub height: usize,
    pub channels: usize,
    pub values: Vec<f32>,
}

/// Values read a row at a time (width × channels, HWC): what a resize reads from.
pub trait Image {
    fn width(&self) -> usize;
    fn height(&self) -> usize;
    fn channels(&self) -> usize;
    /// Replaces `out` with row `y`: the pixels of columns `cols`, or of every column.
    fn row(&self, y: usize, cols: Option<&[usize]>, out: &mut Vec<f32>);
}

/// Decoded samples seen as the model's values: oriented, in its channel count and order,
/// converted to f32 as they are read (the same arithmetic as `to_plane` and `orient`).
pub struct Decoded<'p> {
    pixels: &'p Pixels,
    source: Vec<Option<usize>>,
    eight_bit: bool,
    orientation: u16,
}

impl<'p> Decoded<'p> {
    pub fn new(
        pixels: &'p Pixels,
        want: usize,
        options: &ImageOptions,
        eight_bit: bool,
        orientation: u16,
    ) -> Result<Decoded<'p>, String> {
        Ok(Decoded {
            source: channel_sources(pixels.channels, want, options)?,
            pixels,
            eight_bit,
            orientation: if (2..=8).contains(&orientation) {
                orientation
            } else {
                1
            },
        })
    }

    /// Row `y` of the oriented image, from `samples` converted by `to_f32`.
    fn row_of<S: Copy>(
        &self,
        samples: &[S],
        (y, cols): (usize, Option<&[usize]>),
        out: &mut Vec<f32>,
        to_f32: impl Fn(S) -> f32,
    ) {
        let (w, h, have) = (self.pixels.width, self.pixels.height, self.pixels.channels);
        out.clear();
        if cols.is_none() && matches!(self.orientation, 1 | 4) {
            // A stored row, front to back.
            let sy = oriented_source(self.orientation, 0, y, w, h).1;
            return convert(
                &samples[sy * w * have..][..w * have],
                have,
                &self.source,
                to_f32,
                out,
            );
        }
        let mut pixel = |x: usize| {
            let (sx, sy) = oriented_source(self.orientation, x, y, w, h);
            let px = &samples[(sy * w + sx) * have..][..have];
            convert(px, have, &self.source, &to_f32, out);
        };
        match cols {
            Some(cols) => cols.iter().for_each(|&x| pixel(x)),
            None => (0..self.width()).for_each(pixel),
        }
    }
}

impl Image for Decoded<'_> {
    fn width(&self) -> usize {
        match self.orientation >= 5 {
            true => self.pixels.height,
            false => self.pixels.width,
        }
    }
    fn height(&self) -> usize {
        match self.orientation >= 5 {
            true => self.pixels.width,
            false => self.pixels.height,
        }
    }
    fn channels(&self) -> usize {
        self.source.len()
    }
    fn row(&self, y: usize, cols: Option<&[usize]>, out: &mut Vec<f32>) {
        let at = (y, cols);
        match &self.pixels.samples {
            Samples::U8(v) => self.row_of(v, at, out, f32::from),
            Samples::U16(v) if self.eight_bit => self.row_of(v, at, out, |s| f32::from(s) / 257.0),
            Samples::U16(v) => self.row_of(v, at, out, f32::from),
        }
    }
}

/// For each output channel, the source channel it is read from; `None`: luma of R, G, B.
fn channel_sources(
    have: usize,
    want: usize,
    options: &ImageOptions,
) -> Result<Vec<Option<usize>>, String> {
    let mut source: Vec<Option<usize>> = match (have, want) {
        (h, w) if h == w => (0..h).map(Some).collect(),
        _ if !options.convert_channels => {
            return Err(format!("has {have} channels, the model input takes {want}"));
        }
        (1 | 2, 3) => vec![Some(0); 3],
        (4, 3) => vec![Some(0), Some(1), Some(2)],
        (2, 1) => vec![Some(0)],
        (3 | 4, 1) => vec![None],
        _ => return Err(format!("has {have} channels, which cannot become {want}")),
    };
    if want >= 3 && options.color == ColorOrder::Bgr {
        source.swap(0, 2);
    }
    Ok(source)
}

/// One pass over the samples, picking and converting each output value.
fn convert<S: Copy>(
    samples: &[S],
    have: usize,
    source: &[Option<usize>],
    to_f32: impl Fn(S) -> f32,
    out: &mut Vec<f32>,
) {
    let want = source.len();
    let start = out.len();
    out.resize(start + samples.len() / have * want, 0.0);
    for (px, dst) in samples
        .chunks_exact(have)
        .zip(out[start..].chunks_exact_mut(want))
    {
        for (d, src) in dst.iter_mut().zip(source) {
            *d = match *src {
                Some(c) => to_f32(px[c]),
                None => 0.299 * to_f32(px[0]) + 0.587 * to_f32(px[1]) + 0.114 * to_f32(px[2]),
            };
        }
    }
}

/// Where pixel (x, y) of the image as EXIF orientation `orientation` shows it comes from in
/// the stored `w` × `h` image.
fn oriented_source(orientation: u16, x: usize, y: usize, w: usize, h: usize) -> (usize, usize) {
    match orientation {
        2 => (w - 1 - x, y),
        3 => (w - 1 - x, h - 1 - y),
        4 => (x, h - 1 - y),
        5 => (y, x),
        6 => (y, h - 1 - x),
        7 => (w - 1 - y, h - 1 - x),
        8 => (w - 1 - y, x),
        _ => (x, y),
    }
}

/// Bilinear resize with OpenCV's INTER_LINEAR geometry (pixel centres aligned,
/// src = (dst + 0.5) × scale − 0.5, clamped to the edges).
pub fn bilinear(image: &impl Image, width: usize, height: usize) -> Plane {
    let c = image.channels();
    if (width, height) == (image.width(), image.height()) {
        // Every weight would be 0: the rows as they are.
        let (mut values, mut row) = (Vec::with_capacity(width * height * c), Vec::new());
        for y in 0..height {
            image.row(y, None, &mut row);
            values.extend_from_slice(&row);
        }
        return Plane {
            width,
            height,
            channels: c,
            values,
        };
    }
    let axis = |dst: usize, src: usize| -> Vec<(usize, usize, f32)> {
        let scale = src as f32 / dst as f32;
        (0..dst)
            .map(|d| {
                let f = ((d as f32 + 0.5) * scale - 0.5).max(0.0);
                let i0 = (f.floor() as usize).min(src - 1);
                let i1 = (i0 + 1).min(src - 1);
                (i0, i1, f - i0 as f32)
            })
            .collect()
    };
    let (mut xs, ys) = (axis(width, image.width()), axis(height, image.height()));
    // Only the columns the output reads are converted (a large downscale reads few); `xs` then
    // points into them.
    let mut cols: Vec<usize> = xs.iter().flat_map(|&(x0, x1, _)| [x0, x1]).collect();
    cols.sort_unstable();
    cols.dedup();
    let cols = (cols.len() < image.width()).then(|| {
        for x in &mut xs {
            let at = |x| cols.partition_point(|&c| c < x);
            *x = (at(x.0), at(x.1), x.2);
        }
        cols
    });
    // The two source rows an output row reads, each converted once as the rows move down: no
    // full-size f32 copy of the image, and rows between the ones read are never converted.
    let (mut top, mut bottom) = ((usize::MAX, Vec::new()), (usize::MAX, Vec::new()));
    let mut out = Vec::with_capacity(width * height * c);
    for &(y0, y1, fy) in &ys {
        if top.0 != y0 {
            if bottom.0 == y0 {
                std::mem::swap(&mut top, &mut bottom);
            } else {
                image.row(y0, cols.as_deref(), &mut top.1);
                top.0 = y0;
            }
        }
        if bottom.0 != y1 {
            image.row(y1, cols.as_deref(), &mut bottom.1);
            bottom.0 = y1;
        }
        for &(x0, x1, fx) in &xs {
            for ch in 0..c {
                let (a, b) = (x0 * c + ch, x1 * c + ch);
                let upper = top.1[a] + (top.1[b] - top.1[a]) * fx;
                let lower = bottom.1[a] + (bottom.1[b] - bottom.1[a]) * fx;
                out.push(upper + (lower - upper) * fy);
            }
        }
    }
    Plane {
        width,
        height,
        channels: c,
        values: out,
    }
}

/// Brings an image of another size to exactly `width` × `height` by the configured mode;
/// letterbox padding is `pad`.
pub fn fit(image: &impl Image, width: usize, height: usize, mode: ResizeMode, pad: f32) -> Plane {
    let (sw, sh) = (image.width() as f32, image.height() as f32);
    let scale = match mode {
        ResizeMode::Stretch => return bilinear(image, width, height),
        ResizeMode::Letterbox => (width as f32 / sw).min(height as f32 / sh),
        ResizeMode::CenterCrop => (width as f32 / sw).max(height as f32 / sh),
    };
    let rw = ((sw * scale).round() as usize).max(1);
    let rh = ((sh * scale).round() as usize).max(1);
    let scaled = bilinear(image, rw, rh);
    let c = image.channels();
    let mut out = vec![pad; width * height * c];
    // Offsets of the scaled image in the output (letterbox) or of the output in it (crop).
    let ox = (width as isize - rw as isize) / 2;
    let oy = (height as isize - rh as isize) / 2;
    for y in 0..height {
        let sy = y as isize - oy;
        if sy < 0 || sy >= rh as isize {
            continue;
        }
        for x in 0..width {
            let sx = x as isize - ox;
            if sx < 0 || sx >= rw as isize {
                continue;
            }
            let (d, s) = ((y * width + x) * c, (sy as usize * rw + sx as usize) * c);
            out[d..d + c].copy_from_slice(&scaled.values[s..s + c]);
        }
    }
    Plane {
        width,
        height,
        channels: c,
        values: out,
    }
}

/// value = (value × scale − mean) / std, per channel.
pub fn normalize(plane: &mut Plane, options: &ImageOptions) {
    if !options.normalizes() {
        return;
    }
    let scale = options.scale.unwrap_or(1.0);
    let c = plane.channels;
    for px in plane.values.chunks_exact_mut(c) {
        for (ch, v) in px.iter_mut().enumerate() {
            let mean = options.mean.get(ch).copied().unwrap_or(0.0);
            let std = options.std.get(ch).copied().unwrap_or(1.0);
            *v = (*v * scale - mean) / std;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A whole plane read as an image: the reference the view is checked against.
    impl Image for Plane {
        fn width(&self) -> usize {
            self.width
        }
        fn height(&self) -> usize {
            self.height
        }
        fn channels(&self) -> usize {
            self.channels
        }
        fn row(&self, y: usize, cols: Option<&[usize]>, out: &mut Vec<f32>) {
            let (len, c) = (self.width * self.channels, self.channels);
            let row = &self.values[y * len..(y + 1) * len];
            out.clear();
            match cols {
                None => out.extend_from_slice(row),
                Some(cols) => cols
                    .iter()
                    .for_each(|&x| out.extend_from_slice(&row[x * c..][..c])),
            }
        }
    }

    /// The reference the view is checked against: native samples to f32 in the model's
    /// channel count and order (16-bit samples scaled to 0..255 into 8-bit datatypes).
    fn to_plane(
        pixels: Pixels,
        want: usize,
        options: &ImageOptions,
        eight_bit: bool,
    ) -> Result<Plane, String> {
        let have = pixels.channels;
        let source = channel_sources(have, want, options)?;
        let mut values = Vec::new();
        match &pixels.samples {
            Samples::U8(v) => convert(v, have, &source, f32::from, &mut values),
            Samples::U16(v) if eight_bit => {
                convert(v, have, &source, |s| f32::from(s) / 257.0, &mut values)
            }
            Samples::U16(v) => convert(v, have, &source, f32::from, &mut values),
        };
        Ok(Plane {
            width: pixels.width,
            height: pixels.height,
            channels: want,
            values,
        })
    }

    /// The reference for orientation: applies an EXIF orientation (1..=8) to a whole plane.
    fn orient(plane: Plane, orientation: u16) -> Plane {
        if orientation <= 1 || orientation > 8 {
            return plane;
        }
        let (w, h, c) = (plane.width, plane.height, plane.channels);
        let (dw, dh) = if orientation >= 5 { (h, w) } else { (w, h) };
        let mut out = vec![0.0; plane.values.len()];
        for y in 0..dh {
            for x in 0..dw {
                let (sx, sy) = oriented_source(orientation, x, y, w, h);
                let (d, s) = ((y * dw + x) * c, (sy * w + sx) * c);
                out[d..d + c].copy_from_slice(&plane.values[s..s + c]);
            }
        }
        Plane {
            width: dw,
            height: dh,
            channels: c,
            values: out,
        }
    }

    fn plane(w: usize, h: usize, values: Vec<f32>) -> Plane {
        Plane {
            width: w,
            height: h,
            channels: 1,
            values,
        }
    }

    #[test]
    fn bilinear_matches_opencv_geometry() {
        // 2x1 → 4x1: OpenCV gives [a, a + (b-a)/4, a + 3(b-a)/4, b].
        let p = bilinear(&plane(2, 1, vec![0.0, 100.0]), 4, 1);
        assert_eq!(p.values, vec![0.0, 25.0, 75.0, 100.0]);
        // 4x1 → 2x1 samples at 0.5 and 2.5.
        let p = bilinear(&plane(4, 1, vec![0.0, 10.0, 20.0, 30.0]), 2, 1);
        assert_eq!(p.values, vec![5.0, 25.0]);
    }

    #[test]
    fn orientations_move_corners() {
        // 2x1 image [a b]: orientation 6 (90° clockwise) gives a 1x2 column [a; b].
        let p = orient(plane(2, 1, vec![1.0, 2.0]), 6);
        assert_eq!(
            (p.width, p.height, p.values.clone()),
            (1, 2, vec![1.0, 2.0])
        );
        let p = orient(plane(2, 1, vec![1.0, 2.0]), 8);
        assert_eq!(
            (p.width, p.height, p.values.clone()),
            (1, 2, vec![2.0, 1.0])
        );
        let p = orient(plane(2, 1, vec![1.0, 2.0]), 2);
        assert_eq!(p.values, vec![2.0, 1.0]);
    }

    #[test]
    fn letterbox_pads_and_crop_cuts() {
        let wide = plane(4, 2, vec![1.0; 8]);
        let boxed = fit(&wide, 4, 4, ResizeMode::Letterbox, 0.0);
        assert_eq!(boxed.values[..4], [0.0; 4], "top padding row");
        assert_eq!(boxed.values[4..12], [1.0; 8]);
        let gray = fit(
            &plane(4, 2, vec![1.0; 8]),
            4,
            4,
            ResizeMode::Letterbox,
            114.0,
        );
        assert_eq!(
            gray.values[..4],
            [114.0; 4],
            "padded with the configured value"
        );
        assert_eq!(gray.values[12..], [114.0; 4], "bottom padding row");
        let cropped = fit(
            &plane(4, 2, vec![1.0, 2.0, 3.0, 4.0, 1.0, 2.0, 3.0, 4.0]),
            2,
            2,
            ResizeMode::CenterCrop,
            0.0,
        );
        assert_eq!(cropped.values, vec![2.0, 3.0, 2.0, 3.0]);
    }

    #[test]
    fn the_decoded_view_reads_what_the_full_plane_holds() {
        let pixels = || Pixels {
            width: 3,
            height: 2,
            channels: 4,
            samples: Samples::U16((0..24).map(|v| v * 2700).collect()),
        };
        let options = ImageOptions {
            convert_channels: true,
            ..Default::default()
        };
        for (want, eight_bit) in [(3, true), (1, false), (3, false)] {
            for orientation in 1..=8 {
                let source = pixels();
                let view = Decoded::new(&source, want, &options, eight_bit, orientation).unwrap();
                let full = orient(
                    to_plane(pixels(), want, &options, eight_bit).unwrap(),
                    orientation,
                );
                assert_eq!((view.width(), view.height()), (full.width, full.height));
                for (w, h) in [(2, 2), (5, 3), (1, 1), (3, 2), (2, 3)] {
                    assert_eq!(bilinear(&view, w, h).values, bilinear(&full, w, h).values);
                }
            }
        }
    }

    #[test]
    fn channels_convert_only_when_asked() {
        let gray = || Pixels {
            width: 1,
            height: 1,
            channels: 1,
            samples: Samples::U8(vec![7]),
        };
        let strict = ImageOptions::default();
        assert!(to_plane(gray(), 3, &strict, true)
            .unwrap_err()
            .contains("1 channels"));
        let convert = ImageOptions {
            convert_channels: true,
            ..Default::default()
        };
        assert_eq!(
            to_plane(gray(), 3, &convert, true).unwrap().values,
            vec![7.0; 3]
        );
        let rgb = Pixels {
            width: 1,
            height: 1,
            channels: 3,
            samples: Samples::U16(vec![65535, 0, 257]),
        };
        assert_eq!(
            to_plane(rgb, 3, &strict, true).unwrap().values,
            vec![1.0, 0.0, 255.0],
            "BGR, 16 to 8 bit"
        );
    }
}
