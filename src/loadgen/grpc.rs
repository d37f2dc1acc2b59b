//! The load generator's gRPC client: ModelInfer over one HTTP/2 connection per stream (h2 on
//! monoio's tokio-style I/O, as the server runs it), and the request and response messages.

use bytes::{Buf, Bytes};
use h2::client::SendRequest;
use monoio::io::IntoPollIo;
use prost::Message;

use super::client::{Reply, Target};
use super::workload::{Inputs, Step};
use crate::proto::inference as pb;

pub const MODEL_INFER: &str = "/inference.GRPCInferenceService/ModelInfer";

/// A ModelInferRequest with raw contents, framed as a gRPC message (5-byte prefix).
pub fn encode_request(model: &str, version: Option<&str>, inputs: &Inputs, step: Step) -> Bytes {
    use pb::infer_parameter::ParameterChoice;
    let parameter = |choice| pb::InferParameter {
        parameter_choice: Some(choice),
    };
    let parameters = step
        .map(|(id, start)| {
            [
                (
                    "sequence_id".to_string(),
                    parameter(ParameterChoice::Int64Param(id as i64)),
                ),
                (
                    "sequence_start".to_string(),
                    parameter(ParameterChoice::BoolParam(start)),
                ),
            ]
            .into()
        })
        .unwrap_or_default();
    let request = pb::ModelInferRequest {
        parameters,
        model_name: model.to_string(),
        model_version: version.unwrap_or_default().to_string(),
        inputs: inputs
            .iter()
            .map(|(name, tensor)| pb::model_infer_request::InferInputTensor {
                name: name.clone(),
                datatype: tensor.datatype.as_str().to_string(),
                shape: tensor.shape.iter().map(|&d| d as i64).collect(),
                ..Default::default()
            })
            .collect(),
        raw_input_contents: inputs.iter().map(|(_, t)| t.data.clone()).collect(),
        ..Default::default()
    };
    let message = request.encode_to_vec();
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(&(message.len() as u32).to_be_bytes());
    framed.extend_from_slice(&message);
    Bytes::from(framed)
}

/// A ModelInferResponse message (in the chunks it arrived in, without its prefix), with as many
/// raw contents as outputs. Two chunks (the head, then one large output, as tensord sends them)
/// are decoded without joining them: the output is a view of its chunk.
pub fn decode_response(chunks: &[Bytes]) -> Result<pb::ModelInferResponse, String> {
    let decoded = match chunks {
        [one] => pb::ModelInferResponse::decode(one.clone()),
        [head, tail] => pb::ModelInferResponse::decode(head.clone().chain(tail.clone())),
        many => pb::ModelInferResponse::decode(Bytes::from(many.concat())),
    };
    let response =
        decoded.map_err(|e| format!("a ModelInferResponse that does not decode: {e}"))?;
    if response.raw_output_contents.len() != response.outputs.len() {
        return Err(format!(
            "{} outputs but {} raw_output_contents",
            response.outputs.len(),
            response.raw_output_contents.len()
        ));
    }
    Ok(response)
}

/// One HTTP/2 connection; calls on it go one at a time (a closed-loop stream).
pub struct GrpcConnection {
    send: SendRequest<Bytes>,
    authority: String,
}

impl GrpcConnection {
    pub async fn open(target: &Target) -> Result<GrpcConnection, String> {
        let stream = monoio::net::TcpStream::connect(target.addr)
            .await
            .map_err(|e| format!("connect to {}: {e}", target.addr))?;
        let _ = stream.set_nodelay(true);
        let io = stream
            .into_poll_io()
            .map_err(|e| format!("connect to {}: {e}", target.addr))?;
        let (send, connection) = h2::client::Builder::new()
            .initial_window_size(4 << 20)
            .initial_connection_window_size(4 << 20)
            .max_frame_size(1 << 20)
            .handshake::<_, Bytes>(io)
            .await
            .map_err(|e| format!("HTTP/2 handshake with {}: {e}", target.addr))?;
        monoio::spawn(async move {
            let _ = connection.await;
        });
        Ok(GrpcConnection {
            send,
            authority: target.host.clone(),
        })
    }

    /// Sends one framed request message and reads the response message; a non-zero
    /// grpc-status is an error with its message.
    pub async fn exchange(&mut self, message: Bytes) -> Result<Reply, String> {
        let request = http::Request::post(format!("http://{}{MODEL_INFER}", self.authority))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(())
            .map_err(|e| e.to_string())?;
        let mut send = self.send.clone().ready().await.map_err(|e| e.to_string())?;
        let (response, mut body) = send
            .send_request(request, false)
            .map_err(|e| format!("send: {e}"))?;
        body.send_data(message, true)
            .map_err(|e| format!("send: {e}"))?;
        let response = response.await.map_err(|e| format!("response: {e}"))?;
        let status = |headers: &http::HeaderMap| -> Option<Result<(), String>> {
            let code = headers.get("grpc-status")?;
            Some(match code.as_bytes() {
                b"0" => Ok(()),
                code => Err(format!(
                    "grpc-status {}: {}",
                    String::from_utf8_lossy(code),
                    headers
                        .get("grpc-message")
                        .map_or(String::new(), |m| String::from_utf8_lossy(m.as_bytes())
                            .into())
                )),
            })
        };
        // A trailers-only response carries its status in the headers.
        if let Some(Err(e)) = status(response.headers()) {
            return Err(e);
        }
        let mut body = response.into_body();
        let mut chunks = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.map_err(|e| format!("read: {e}"))?;
            let _ = body.flow_control().release_capacity(chunk.len());
            chunks.push(chunk);
        }
        let trailers = body.trailers().await.map_err(|e| format!("read: {e}"))?;
        match trailers.as_ref().and_then(status) {
            Some(Ok(())) => {}
            Some(Err(e)) => return Err(e),
            None => return Err("a response without grpc-status".into()),
        }
        let size: usize = chunks.iter().map(Bytes::len).sum();
        let prefix = match chunks.first_mut() {
            Some(first) if first.len() >= 5 && first[0] == 0 => first.split_to(5),
            _ => return Err("a response without one uncompressed message".into()),
        };
        let length = u32::from_be_bytes([prefix[1], prefix[2], prefix[3], prefix[4]]) as usize;
        if size - 5 != length {
            return Err(format!(
                "a response message of {} bytes where its prefix says {length}",
                size - 5
            ));
        }
        Ok(Reply {
            status: 200,
            header_length: None,
            body: Bytes::new(),
            grpc: Some(decode_response(&chunks)?),
            size,
        })
    }
}
