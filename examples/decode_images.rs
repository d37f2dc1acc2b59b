//! Times tensord's image path (decode + convert into the model tensor) on JPEG files, for
//! scripts/bench-images. Prints one line per file: path, then µs per image for a one-image
//! request into UINT8 NHWC (the decode-into-tensor path), a one-image request into FP32 NCHW
//! resized to 224x224, and an 8-image request into UINT8 NHWC (decoded in parallel).
//!
//! Usage: decode_images ROUNDS FILE...

use std::time::Instant;

use tensord::images::{decode_images, Budget, ImageOptions, ImageTarget};
use tensord::tensors::{push_bytes_element, DataType, Tensor};

fn request(image: &[u8], n: usize) -> Tensor {
    let mut data = Vec::new();
    for _ in 0..n {
        push_bytes_element(&mut data, image).expect("small image");
    }
    Tensor::new(DataType::Bytes, vec![n as u64], data.into(), 1 << 40).expect("valid BYTES")
}

fn micros_per_image(rounds: usize, input: &Tensor, target: &ImageTarget) -> f64 {
    let n = input.shape[0] as f64;
    decode_images(input, target, &Budget::UNLIMITED).expect("decodes");
    let start = Instant::now();
    for _ in 0..rounds {
        std::hint::black_box(decode_images(input, target, &Budget::UNLIMITED).expect("decodes"));
    }
    start.elapsed().as_secs_f64() * 1e6 / (rounds as f64 * n)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let rounds: usize = args.get(1).and_then(|r| r.parse().ok()).unwrap_or(20);
    let options = ImageOptions::default();
    let native = ImageTarget::of(DataType::Uint8, &[-1, -1, -1, 3], &[], None, &options)
        .expect("image target");
    let resized = ImageTarget::of(
        DataType::Fp32,
        &[-1, 3, 224, 224],
        &[],
        Some("NCHW"),
        &options,
    )
    .expect("image target");
    for path in &args[2..] {
        let image = std::fs::read(path).expect("readable file");
        let one = request(&image, 1);
        let eight = request(&image, 8);
        println!(
            "{path} {:.1} {:.1} {:.1}",
            micros_per_image(rounds, &one, &native),
            micros_per_image(rounds, &one, &resized),
            micros_per_image(rounds.div_ceil(4), &eight, &native),
        );
    }
}
