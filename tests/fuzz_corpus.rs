//! Replays the fuzzers' kept corpus and every crash they ever found (fuzz/regressions)
//! through the same entry points the fuzz targets call: each must return, not panic.

use std::path::Path;

fn replay(target: &str, entry: fn(&[u8])) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut count = 0;
    for folder in ["corpus", "regressions"] {
        let Ok(files) = std::fs::read_dir(root.join(folder).join(target)) else {
            continue;
        };
        for file in files {
            let path = file.unwrap().path();
            let data = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| entry(&data));
            assert!(outcome.is_ok(), "{} panicked", path.display());
            count += 1;
        }
    }
    assert!(count > 0, "no corpus for {target}");
}

#[test]
fn http_request_corpus() {
    replay("http_request", tensord::fuzzing::http_request);
}

#[test]
fn infer_request_corpus() {
    replay("infer_request", tensord::fuzzing::infer_request);
}

#[test]
fn image_corpus() {
    replay("image", tensord::fuzzing::image);
}

#[test]
fn grpc_message_corpus() {
    replay("grpc_message", tensord::fuzzing::grpc_message);
}
