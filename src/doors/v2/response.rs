//! Infer responses: a JSON header built by hand, binary outputs handed over as their own buffers.

use bytes::Bytes;

use super::request::InferRequest;
use crate::engine::{Error, Output};
use crate::http::Response;
use crate::tensors::{write_json_data, DataType};

/// Builds the response: the JSON header first, then each binary output's bytes in `outputs`
/// order. Each output comes with whether it goes back as binary. BYTES that are not UTF-8
/// cannot be a JSON string: asked for as JSON they are a 400, never replaced.
pub fn encode_infer_response(
    model_name: &str,
    model_version: u64,
    request: &InferRequest,
    outputs: Vec<(Output, bool)>,
) -> Result<Response, Error> {
    if let Some((output, _)) = outputs.iter().find(|(o, binary)| {
        !binary
            && !o.in_shared_memory
            && o.tensor.datatype == DataType::Bytes
            && o.tensor
                .bytes_elements()
                .any(|e| std::str::from_utf8(e).is_err())
    }) {
        return Err(Error::invalid(format!(
            "output '{}' holds bytes that are not UTF-8, which JSON cannot carry: request it as \
             binary (\"binary_data\": true)",
            output.name
        )));
    }
    let mut json = Vec::with_capacity(256);
    json.push(b'{');
    if let Some(id) = &request.id {
        json.extend_from_slice(b"\"id\":");
        write_str(&mut json, id);
        json.push(b',');
    }
    json.extend_from_slice(b"\"model_name\":");
    write_str(&mut json, model_name);
    json.extend_from_slice(b",\"model_version\":\"");
    json.extend_from_slice(itoa::Buffer::new().format(model_version).as_bytes());
    json.extend_from_slice(b"\",\"outputs\":[");
    let mut body = vec![Bytes::new()];
    for (i, (output, binary)) in outputs.into_iter().enumerate() {
        if i > 0 {
            json.push(b',');
        }
        json.extend_from_slice(b"{\"name\":");
        write_str(&mut json, output.name);
        json.extend_from_slice(b",\"datatype\":\"");
        json.extend_from_slice(output.tensor.datatype.as_str().as_bytes());
        json.extend_from_slice(b"\",\"shape\":[");
        for (d, dim) in output.tensor.shape.iter().enumerate() {
            if d > 0 {
                json.push(b',');
            }
            json.extend_from_slice(itoa::Buffer::new().format(*dim).as_bytes());
        }
        json.push(b']');
        if output.in_shared_memory {
            // Its bytes are in the region the request named.
            json.push(b'}');
        } else if binary {
            json.extend_from_slice(b",\"parameters\":{\"binary_data_size\":");
            json.extend_from_slice(
                itoa::Buffer::new()
                    .format(output.tensor.data.len())
                    .as_bytes(),
            );
            json.extend_from_slice(b"}}");
            body.push(output.tensor.data);
        } else {
            json.extend_from_slice(b",\"data\":");
            write_json_data(&mut json, &output.tensor);
            json.push(b'}');
        }
    }
    json.extend_from_slice(b"]}");
    let header_len = json.len();
    body[0] = Bytes::from(json);
    let binary = body.len() > 1;
    Ok(Response {
        status: 200,
        content_type: if binary {
            "application/octet-stream"
        } else {
            "application/json"
        },
        headers: if binary {
            vec![("Inference-Header-Content-Length", header_len.to_string())]
        } else {
            Vec::new()
        },
        body,
    })
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}
