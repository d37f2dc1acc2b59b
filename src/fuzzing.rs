//! Raw bytes into the decoders a client's bytes reach: the fuzz targets (fuzz/, cargo-fuzz)
//! call these, and the test command replays every input the fuzzer kept through them
//! (tests/fuzz_corpus.rs). Errors are the expected outcome; a panic or a hang is the bug.

use bytes::{Bytes, BytesMut};

use crate::doors::grpc::decode_requests;
use crate::doors::v2::{decode_infer_request, header_length};
use crate::engine::SharedPlace;
use crate::http::{parse_head, BodyReader, BodyStep, Coding, Limits};
use crate::images::{decode_images, Budget, ImageOptions, ImageTarget};
use crate::server::grpc::next_message;
use crate::tensors::{push_bytes_element, DataType, Tensor};

/// Small limits keep each run fast; the code paths are the same as with the defaults.
const LIMITS: Limits = Limits {
    max_header_bytes: 8 * 1024,
    max_body_bytes: 1 << 20,
    grpc_max_pending_bytes: 1 << 20,
};
const MAX_ELEMENTS: u64 = 1 << 20;

/// A whole request as it arrives: the head, then the body through the server's own body
/// reader (Content-Length or chunked, limits, 100-continue), its bytes arriving in two reads,
/// then the V2 decode with the head's Inference-Header-Content-Length.
pub fn http_request(data: &[u8]) {
    let mut buf = BytesMut::from(data);
    let Ok(Some((parsed, head_len))) = parse_head(&buf, &LIMITS) else {
        return;
    };
    let head = parsed.into_head(buf.split_to(head_len).freeze());
    let Ok(mut reader) = BodyReader::new(&head, &LIMITS) else {
        return;
    };
    let mut second_read = buf.split_off(buf.len() / 2);
    let body = loop {
        match reader.step(&mut buf) {
            Ok(BodyStep::Done(body)) => break body,
            Ok(BodyStep::Read { .. }) if !second_read.is_empty() => {
                buf.unsplit(second_read.split());
            }
            // The client stopped sending, or the framing is wrong.
            _ => return,
        }
    };
    let header_len = match head
        .header("inference-header-content-length")
        .map(header_length)
    {
        Some(Ok(n)) => Some(n),
        Some(Err(_)) => return,
        None => None,
    };
    infer_body(&body, header_len);
}

/// A V2 body: the first four bytes give the JSON header's length (little-endian; all ones:
/// none, the whole body is JSON), the rest is the body.
pub fn infer_request(data: &[u8]) {
    let Some((len, body)) = data.split_first_chunk::<4>() else {
        return;
    };
    let header_len = match u32::from_le_bytes(*len) {
        u32::MAX => None,
        n => Some(u64::from(n)),
    };
    infer_body(&Bytes::copy_from_slice(body), header_len);
}

fn infer_body(body: &Bytes, header_len: Option<u64>) {
    if let Ok(request) = decode_infer_request(body, header_len, MAX_ELEMENTS) {
        let _ = request.parameters.sequence();
        for output in &request.outputs {
            let _ = SharedPlace::of(&output.parameters, &output.name);
        }
        // Walk what a model would read: BYTES elements, and every tensor's size.
        for input in &request.inputs {
            if input.tensor.datatype == DataType::Bytes {
                let _ = input.tensor.bytes_elements().count();
            }
        }
    }
}

/// A gRPC request body: the first byte picks the call's `grpc-encoding` (identity, gzip,
/// deflate), the rest is length-prefixed messages, each decoded as ModelInferRequest and as TF
/// Serving's PredictRequest, with their tensors.
pub fn grpc_message(data: &[u8]) {
    let Some((&coding, body)) = data.split_first() else {
        return;
    };
    let coding = [None, Some(Coding::Gzip), Some(Coding::Deflate)][usize::from(coding % 3)];
    let mut buf = BytesMut::from(body);
    while let Ok(Some(message)) = next_message(&mut buf, coding, LIMITS.max_body_bytes) {
        decode_requests(message, MAX_ELEMENTS);
    }
}

/// One image, decoded at its own size (UINT8 NHWC, OVMS's default) and resized into a fixed
/// FP32 NCHW target.
pub fn image(data: &[u8]) {
    let mut element = Vec::with_capacity(data.len() + 4);
    if push_bytes_element(&mut element, data).is_err() {
        return;
    }
    let input = Tensor {
        datatype: DataType::Bytes,
        shape: vec![1],
        data: Bytes::from(element),
    };
    let options = ImageOptions::default();
    let targets = [
        (DataType::Uint8, [-1, -1, -1, 3], None),
        (DataType::Fp32, [1, 3, 17, 23], Some("NCHW")),
    ];
    for (datatype, dims, layout) in targets {
        if let Some(target) = ImageTarget::of(datatype, &dims, &[], layout, &options) {
            let budget = Budget {
                max_elements: MAX_ELEMENTS,
                max_image_pixels: 1 << 22,
                max_request_pixels: 1 << 24,
            };
            let _ = decode_images(&input, &target, &budget);
        }
    }
}
