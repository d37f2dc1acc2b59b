//! Parsing infer requests and encoding their responses (binary and JSON), plus the JSON parser
//! choice: tensord's paths against serde_json (typed, borrowed) and simd-json on a real request
//! header and on JSON tensor data.
//!
//! Run: cargo bench --bench infer_codec

use std::borrow::Cow;

use bytes::Bytes;
use divan::{black_box, Bencher};
use serde::Deserialize;

use tensord::doors::v2::{decode_infer_request, encode_infer_response};
use tensord::engine;
use tensord::http::{compress, parse_head, Coding, Limits};
use tensord::tensors::{decode_json_data, tensor_of_nested, DataType};

fn main() {
    divan::main();
}

/// The request tritonclient sends for identity FP32 [1, n] with binary input and output.
fn binary_request(n: usize) -> (Vec<u8>, usize) {
    let json = format!(
        r#"{{"inputs":[{{"name":"INPUT0","shape":[1,{n}],"datatype":"FP32","parameters":{{"binary_data_size":{}}}}}],"outputs":[{{"name":"OUTPUT0","parameters":{{"binary_data":true}}}}]}}"#,
        n * 4
    );
    let mut req = format!(
        "POST /v2/models/identity/infer HTTP/1.1\r\nHost: localhost:8000\r\nUser-Agent: Python-urllib/3.11\r\nAccept-Encoding: identity\r\nInference-Header-Content-Length: {}\r\nContent-Length: {}\r\n\r\n",
        json.len(),
        json.len() + n * 4
    )
    .into_bytes();
    let head_len = req.len();
    req.extend_from_slice(json.as_bytes());
    req.extend((0..n).flat_map(|i| (i as f32).to_le_bytes()));
    (req, head_len)
}

const SIZES: &[usize] = &[16, 150_528];

/// Head parse, JSON header parse and slicing of the binary input: everything before the model.
#[divan::bench(args = SIZES)]
fn parse_binary_request(bencher: Bencher, n: usize) {
    let (raw, head_len) = binary_request(n);
    let raw = Bytes::from(raw);
    let limits = Limits::default();
    let json_len = raw.len() - head_len - n * 4;
    bencher
        .counter(divan::counter::BytesCount::new(raw.len()))
        .bench(|| {
            let (head, len) = parse_head(black_box(&raw), &limits).unwrap().unwrap();
            let head = head.into_head(raw.slice(..len));
            let body = raw.slice(len..);
            let request = decode_infer_request(&body, Some(json_len as u64), u64::MAX).unwrap();
            black_box((head, request.inputs.len()));
        });
}

/// The JSON header and the iovec list of a binary response (the tensor itself is not copied).
#[divan::bench(args = SIZES)]
fn encode_binary_response(bencher: Bencher, n: usize) {
    let (raw, head_len) = binary_request(n);
    let body = Bytes::from(raw).slice(head_len..);
    let json_len = body.len() - n * 4;
    bench_identity_response(bencher, &body, Some(json_len as u64), true);
}

/// Encodes identity's response to the request in `body`: its input as OUTPUT0.
fn bench_identity_response(bencher: Bencher, body: &Bytes, header_len: Option<u64>, binary: bool) {
    let request = decode_infer_request(body, header_len, u64::MAX).unwrap();
    let tensor = request.inputs[0].tensor.clone();
    bencher.bench(|| {
        let output = engine::Output {
            name: "OUTPUT0",
            tensor: tensor.clone(),
            in_shared_memory: false,
        };
        black_box(encode_infer_response("identity", 1, &request, vec![(output, binary)]).unwrap());
    });
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Header<'a> {
    #[serde(borrow)]
    id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    inputs: Vec<Input<'a>>,
    #[serde(default, borrow)]
    outputs: Vec<Output<'a>>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Input<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    shape: Vec<u64>,
    #[serde(borrow)]
    datatype: Cow<'a, str>,
    parameters: Option<Params>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Output<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    parameters: Option<Params>,
}

#[derive(Deserialize)]
#[allow(dead_code)]
struct Params {
    binary_data_size: Option<u64>,
    binary_data: Option<bool>,
}

/// A two-input add_sub request header as tritonclient writes it (about 300 bytes).
const HEADER: &str = r#"{"id":"42","inputs":[{"name":"INPUT0","shape":[1,16],"datatype":"INT32","parameters":{"binary_data_size":64}},{"name":"INPUT1","shape":[1,16],"datatype":"INT32","parameters":{"binary_data_size":64}}],"outputs":[{"name":"OUTPUT0","parameters":{"binary_data":true}},{"name":"OUTPUT1","parameters":{"binary_data":true}}]}"#;

#[divan::bench]
fn header_serde_json(bencher: Bencher) {
    bencher.bench(|| {
        black_box(
            serde_json::from_str::<Header>(black_box(HEADER))
                .unwrap()
                .inputs
                .len(),
        )
    });
}

/// tensord's own header path: the walk, serde_json on each small value (the binary
/// inputs are sliced, not decoded).
#[divan::bench]
fn header_tensord(bencher: Bencher) {
    let mut body = HEADER.as_bytes().to_vec();
    body.extend_from_slice(&[0; 128]);
    let body = Bytes::from(body);
    bencher.bench(|| {
        let request = decode_infer_request(black_box(&body), Some(HEADER.len() as u64), u64::MAX);
        black_box(request.unwrap().inputs.len())
    });
}

/// simd-json parses in place, so it needs a mutable copy of the header (counted here).
#[divan::bench]
fn header_simd_json(bencher: Bencher) {
    bencher.bench(|| {
        let mut copy = black_box(HEADER).as_bytes().to_vec();
        black_box(
            simd_json::serde::from_slice::<Header>(&mut copy)
                .unwrap()
                .inputs
                .len(),
        )
    });
}

fn json_data(n: usize) -> String {
    let values: Vec<String> = (0..n)
        .map(|i| format!("{}", i as f32 * 0.37 - 1000.0))
        .collect();
    format!("[{}]", values.join(","))
}

/// JSON tensor data to FP32 wire bytes: tensord's decoder (its fast path takes flat arrays).
#[divan::bench(args = SIZES)]
fn data_tensord(bencher: Bencher, n: usize) {
    let text = json_data(n);
    bencher
        .counter(divan::counter::BytesCount::new(text.len()))
        .bench(|| {
            black_box(
                decode_json_data(black_box(&text), DataType::Fp32, &[1, n as u64], u64::MAX)
                    .unwrap(),
            )
        });
}

/// The same with serde_json into a `Vec<f32>`, then the bytes.
#[divan::bench(args = SIZES)]
fn data_serde_json(bencher: Bencher, n: usize) {
    let text = json_data(n);
    bencher
        .counter(divan::counter::BytesCount::new(text.len()))
        .bench(|| {
            let values: Vec<f32> = serde_json::from_str(black_box(&text)).unwrap();
            let mut out = Vec::with_capacity(values.len() * 4);
            for v in values {
                out.extend_from_slice(&v.to_le_bytes());
            }
            black_box(out)
        });
}

/// The same with simd-json: tape parse of a mutable copy, then a walk writing the bytes.
#[divan::bench(args = SIZES)]
fn data_simd_json(bencher: Bencher, n: usize) {
    use simd_json::prelude::*;
    let text = json_data(n);
    bencher
        .counter(divan::counter::BytesCount::new(text.len()))
        .bench(|| {
            let mut copy = black_box(&text).as_bytes().to_vec();
            let value = simd_json::to_borrowed_value(&mut copy).unwrap();
            let array = value.as_array().unwrap();
            let mut out = Vec::with_capacity(array.len() * 4);
            for v in array {
                out.extend_from_slice(&(v.cast_f64().unwrap() as f32).to_le_bytes());
            }
            black_box(out)
        });
}

/// The same FP32 data through the TF Serving path, which must infer the shape from the nesting.
#[divan::bench(args = SIZES)]
fn data_tfs_path(bencher: Bencher, n: usize) {
    let text = json_data(n);
    bencher
        .counter(divan::counter::BytesCount::new(text.len()))
        .bench(|| black_box(tensor_of_nested(black_box(&text), None, u64::MAX).unwrap()));
}

/// The JSON request tensord-bench sends for identity FP32 [1, n] (its random values are
/// multiples of 1/8 in [-16, 16), so most are written in 3 to 7 characters).
fn json_request(n: usize) -> Bytes {
    let values: Vec<String> = (0..n)
        .map(|i| format!("{}", ((i * 37 % 256) as f32 - 128.0) / 8.0))
        .collect();
    Bytes::from(format!(
        r#"{{"inputs":[{{"name":"INPUT0","shape":[1,{n}],"datatype":"FP32","data":[{}]}}],"outputs":[{{"name":"OUTPUT0"}}]}}"#,
        values.join(",")
    ))
}

/// A whole JSON infer request body to input tensors: envelope and data.
#[divan::bench(args = SIZES)]
fn parse_json_request(bencher: Bencher, n: usize) {
    let body = json_request(n);
    bencher
        .counter(divan::counter::BytesCount::new(body.len()))
        .bench(|| {
            let request = decode_infer_request(black_box(&body), None, u64::MAX).unwrap();
            black_box(request.inputs.len());
        });
}

/// The JSON response to that request: the output tensor written as JSON numbers.
#[divan::bench(args = SIZES)]
fn encode_json_response(bencher: Bencher, n: usize) {
    bench_identity_response(bencher, &json_request(n), None, false);
}

/// Response compression: the binary identity response (JSON header and FP32 tensor, values as
/// tensord-bench sends them) through gzip at the level tensord uses. Bytes are the plain size.
#[divan::bench(args = SIZES)]
fn compress_binary_response(bencher: Bencher, n: usize) {
    let values: Vec<u8> = (0..n)
        .flat_map(|i| (((i * 37 % 256) as f32 - 128.0) / 8.0).to_le_bytes())
        .collect();
    let parts = [
        Bytes::from_static(br#"{"model_name":"identity","model_version":"1","outputs":[]}"#),
        Bytes::from(values),
    ];
    let size = parts.iter().map(Bytes::len).sum::<usize>();
    bencher
        .counter(divan::counter::BytesCount::new(size))
        .bench(|| black_box(compress(black_box(&parts), Coding::Gzip)));
}
