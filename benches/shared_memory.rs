//! What shared memory costs per request: the size check (one fstat per region used), an input's
//! view of the mapping (no copy), and the one copy of an output into its region, against a plain
//! memcpy of the same 602 KB (a 224×224×3 FP32 image).
//!
//! Run: cargo bench --bench shared_memory

use std::sync::Arc;

use divan::{black_box, Bencher};

use tensord::shm::Mapping;

const BYTES: usize = 4 * 150_528;

fn main() {
    divan::main();
}

/// A fresh object in /dev/shm, mapped; removed again when the mapping is made.
fn mapping() -> Arc<Mapping> {
    let name = format!("tensord-bench-{}", std::process::id());
    let path = format!("/dev/shm/{name}");
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(BYTES as u64).unwrap();
    let mapping = Mapping::open(&name, 0, BYTES as u64).unwrap();
    std::fs::remove_file(path).unwrap();
    Arc::new(mapping)
}

#[divan::bench]
fn size_check(bencher: Bencher) {
    let mapping = mapping();
    bencher.bench(|| black_box(mapping.still_covered()));
}

#[divan::bench]
fn input_view(bencher: Bencher) {
    let mapping = mapping();
    bencher.bench(|| black_box(mapping.view(0, BYTES)));
}

#[divan::bench]
fn output_write(bencher: Bencher) {
    let mapping = mapping();
    let data = vec![1u8; BYTES];
    bencher.bench(|| mapping.write(0, black_box(&data)));
}

#[divan::bench]
fn memcpy_reference(bencher: Bencher) {
    let (data, mut out) = (vec![1u8; BYTES], vec![0u8; BYTES]);
    bencher.bench_local(|| out.copy_from_slice(black_box(&data)));
}
