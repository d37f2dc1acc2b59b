//! Raw-socket tests: the exact bytes tensord reads and writes.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port no other test of this run gets: tests run in parallel, and a port taken from bind(0)
/// and released could be handed to two of them.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    let base = 20_000 + (std::process::id() % 400) as u16 * 100;
    loop {
        let port = base + NEXT.fetch_add(1, Ordering::Relaxed) % 100;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
}

struct Daemon {
    child: Child,
    addr: String,
}

/// The shipped models with an identity that takes any datatype and shape (the shipped one
/// declares FP32 [-1,16]), as the Python tests serve them.
fn test_repo() -> &'static str {
    static REPO: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    REPO.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let repo = std::env::temp_dir().join(format!("tensord-wire-repo-{}", std::process::id()));
        for model in std::fs::read_dir(root.join("models")).unwrap().flatten() {
            let dir = repo.join(model.file_name());
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::copy(model.path().join("config.toml"), dir.join("config.toml")).unwrap();
        }
        std::fs::copy(
            root.join("scripts/any-identity.toml"),
            repo.join("identity/config.toml"),
        )
        .unwrap();
        repo.to_string_lossy().into_owned()
    })
}

impl Daemon {
    fn start(args: &[&str]) -> Daemon {
        Daemon::start_with_env(args, &[])
    }

    fn start_with_env(args: &[&str], env: &[(&str, &str)]) -> Daemon {
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let grpc = format!("127.0.0.1:{}", free_port());
        let repo = test_repo();
        let child = Command::new(env!("CARGO_BIN_EXE_tensord"))
            .args([
                "--http-addr",
                &addr,
                "--grpc-addr",
                &grpc,
                "--model-repository",
                repo,
                "--threads",
                "2",
                "--drain-delay",
                "0",
            ])
            .args(args)
            .envs(env.iter().copied())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let daemon = Daemon { child, addr };
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            // Start-up checks that the port is free with a listener of its own, briefly: a
            // probe that lands on it is reset, so any error here means "not up yet".
            let mut status = [0u8; 12];
            let ready = TcpStream::connect(&daemon.addr).is_ok_and(|mut s| {
                s.write_all(b"GET /v2/health/ready HTTP/1.1\r\nConnection: close\r\n\r\n")
                    .and_then(|()| s.read_exact(&mut status))
                    .is_ok()
                    && &status[9..12] == b"200"
            });
            if ready {
                return daemon;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("tensord did not start");
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(&self.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    /// One request on a fresh connection.
    fn exchange(&self, raw: &[u8]) -> Response {
        let mut s = self.connect();
        s.write_all(raw).unwrap();
        read_response(&mut s)
    }

    /// The daemon still answers a good infer request on a new connection.
    fn assert_healthy(&self) {
        let (req, _) = identity_fp32(&[1.0, 2.0]);
        let r = self.exchange(&req);
        assert_eq!(r.status, 200, "{}", r.text());
    }
}

impl Daemon {
    fn terminate(&self) {
        unsafe { libc_kill(self.child.id() as i32, 15) };
    }

    /// Waits up to `limit` for the daemon to exit; `None` if it is still running.
    fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.terminate();
        let _ = self.child.wait();
    }
}

/// Both io drivers where the kernel allows io_uring, else epoll alone.
fn drivers() -> Vec<&'static str> {
    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .is_ok_and(|v| v.trim() != "0");
    if disabled {
        eprintln!("io_uring is disabled on this kernel: testing the epoll driver only");
        vec!["epoll"]
    } else {
        vec!["epoll", "uring"]
    }
}

extern "C" {
    #[link_name = "kill"]
    fn libc_kill(pid: i32, sig: i32) -> i32;
}

#[derive(Debug)]
struct Response {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json_error(&self) -> String {
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{}",
            self.head
        );
        let text = self.text();
        let start = text
            .find("{\"error\":\"")
            .unwrap_or_else(|| panic!("no error JSON: {text}"));
        text[start + 10..text.len() - 2].to_string()
    }
}

/// Reads one response (head and Content-Length body) from `s`.
fn read_response(s: &mut TcpStream) -> Response {
    let mut data = Vec::new();
    let mut byte = [0u8; 1];
    while !data.ends_with(b"\r\n\r\n") {
        let n = s.read(&mut byte).unwrap();
        assert!(
            n == 1,
            "connection closed inside a response head: {:?}",
            String::from_utf8_lossy(&data)
        );
        data.push(byte[0]);
    }
    let head = String::from_utf8(data).unwrap();
    let status = head[9..12].parse().unwrap();
    let mut r = Response {
        status,
        head,
        body: Vec::new(),
    };
    let len: usize = r.header("content-length").unwrap().parse().unwrap();
    r.body = vec![0; len];
    s.read_exact(&mut r.body).unwrap();
    r
}

fn assert_closed(s: &mut TcpStream) {
    let mut rest = Vec::new();
    assert_eq!(
        s.read_to_end(&mut rest).unwrap(),
        0,
        "expected the server to close"
    );
}

fn post(path: &str, extra_headers: &str, body: &[u8]) -> Vec<u8> {
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: x\r\n{extra_headers}Content-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req
}

/// A binary identity request for FP32 values, and its JSON header.
fn identity_fp32(values: &[f32]) -> (Vec<u8>, String) {
    let json = format!(
        r#"{{"inputs":[{{"name":"INPUT0","shape":[1,{}],"datatype":"FP32","parameters":{{"binary_data_size":{}}}}}],"outputs":[{{"name":"OUTPUT0","parameters":{{"binary_data":true}}}}]}}"#,
        values.len(),
        values.len() * 4
    );
    let mut body = json.clone().into_bytes();
    for v in values {
        body.extend_from_slice(&v.to_le_bytes());
    }
    let header = format!("Inference-Header-Content-Length: {}\r\n", json.len());
    (post("/v2/models/identity/infer", &header, &body), json)
}

#[test]
fn binary_response_bytes_on_the_wire() {
    let d = Daemon::start(&[]);
    let (req, _) = identity_fp32(&[1.0, -2.0, 0.5, 3.25]);
    let r = d.exchange(&req);
    assert_eq!(r.status, 200);
    let expected_json = r#"{"model_name":"identity","model_version":"1","outputs":[{"name":"OUTPUT0","datatype":"FP32","shape":[1,4],"parameters":{"binary_data_size":16}}]}"#;
    assert!(r.head.starts_with("HTTP/1.1 200 OK\r\n"), "{}", r.head);
    assert_eq!(r.header("content-type"), Some("application/octet-stream"));
    assert_eq!(
        r.header("inference-header-content-length"),
        Some(&*expected_json.len().to_string())
    );
    assert_eq!(
        r.header("content-length"),
        Some(&*(expected_json.len() + 16).to_string())
    );
    assert_eq!(&r.body[..expected_json.len()], expected_json.as_bytes());
    let floats: Vec<u8> = [1.0f32, -2.0, 0.5, 3.25]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    assert_eq!(&r.body[expected_json.len()..], &floats[..]);
}

#[test]
fn several_binary_outputs_in_requested_order_with_zero_sizes() {
    let d = Daemon::start(&[]);
    let json = r#"{"id":"z","inputs":[{"name":"INPUT0","shape":[0,16],"datatype":"INT32","data":[]},{"name":"INPUT1","shape":[0,16],"datatype":"INT32","parameters":{"binary_data_size":0}}],"outputs":[{"name":"OUTPUT1","parameters":{"binary_data":true}},{"name":"OUTPUT0","parameters":{"binary_data":true}}]}"#;
    let header = format!("Inference-Header-Content-Length: {}\r\n", json.len());
    let r = d.exchange(&post("/v2/models/add_sub/infer", &header, json.as_bytes()));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.text(),
        r#"{"id":"z","model_name":"add_sub","model_version":"1","outputs":[{"name":"OUTPUT1","datatype":"INT32","shape":[0,16],"parameters":{"binary_data_size":0}},{"name":"OUTPUT0","datatype":"INT32","shape":[0,16],"parameters":{"binary_data_size":0}}]}"#
    );
}

#[test]
fn pipelined_requests_are_answered_in_order() {
    for driver in drivers() {
        pipelined_requests(Daemon::start(&["--io-driver", driver]));
    }
}

fn pipelined_requests(d: Daemon) {
    let mut s = d.connect();
    let (infer, _) = identity_fp32(&[7.0]);
    let mut batch = b"GET /v2/health/live HTTP/1.1\r\n\r\n".to_vec();
    batch.extend_from_slice(&infer);
    batch.extend_from_slice(b"GET /v2/models/nope HTTP/1.1\r\n\r\nGET /v2 HTTP/1.1\r\n\r\n");
    s.write_all(&batch).unwrap();
    let live = read_response(&mut s);
    assert_eq!(
        (live.status, &live.body[..]),
        (200, &br#"{"live":true}"#[..])
    );
    let infer = read_response(&mut s);
    assert_eq!(infer.status, 200);
    assert!(infer.body.ends_with(&7.0f32.to_le_bytes()));
    let missing = read_response(&mut s);
    assert_eq!(missing.status, 404);
    assert_eq!(
        missing.json_error(),
        "Request for unknown model: 'nope' is not found"
    );
    let meta = read_response(&mut s);
    assert_eq!(meta.status, 200);
    assert!(meta.text().contains(r#""name":"tensord""#));
}

#[test]
fn chunked_body_and_100_continue() {
    for driver in drivers() {
        chunked_and_continue(Daemon::start(&["--io-driver", driver]));
    }
}

fn chunked_and_continue(d: Daemon) {
    let (req, json) = identity_fp32(&[1.5, 2.5]);
    let body = &req[req.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    let mut s = d.connect();
    let head = format!(
        "POST /v2/models/identity/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\nInference-Header-Content-Length: {}\r\n\r\n",
        json.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let mut cont = [0u8; 25];
    s.read_exact(&mut cont).unwrap();
    assert_eq!(&cont, b"HTTP/1.1 100 Continue\r\n\r\n");
    for piece in body.chunks(37) {
        s.write_all(format!("{:x};ext=1\r\n", piece.len()).as_bytes())
            .unwrap();
        s.write_all(piece).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    s.write_all(b"0\r\nX-Trailer: 1\r\n\r\n").unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .body
        .ends_with(&[1.5f32.to_le_bytes(), 2.5f32.to_le_bytes()].concat()));

    // Content-Length body announced with Expect: 100-continue on the same connection.
    let expect = format!(
        "Expect: 100-continue\r\nInference-Header-Content-Length: {}\r\n",
        json.len()
    );
    let full = post("/v2/models/identity/infer", &expect, body);
    let split = full.len() - body.len();
    s.write_all(&full[..split]).unwrap();
    s.read_exact(&mut cont).unwrap();
    assert_eq!(&cont, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(&full[split..]).unwrap();
    assert_eq!(read_response(&mut s).status, 200);
}

#[test]
fn http10_and_connection_close_end_the_connection() {
    let d = Daemon::start(&[]);
    let mut s = d.connect();
    s.write_all(b"GET /v2/health/live HTTP/1.0\r\n\r\n")
        .unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.header("connection"), Some("close"));
    assert_closed(&mut s);

    let mut s = d.connect();
    s.write_all(b"GET /v2/health/live HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET /v2/health/live HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    assert_eq!(
        read_response(&mut s).header("connection"),
        Some("keep-alive")
    );
    assert_eq!(read_response(&mut s).header("connection"), Some("close"));
    assert_closed(&mut s);

    let mut s = d.connect();
    s.write_all(b"HEAD /v2 HTTP/1.1\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).unwrap();
    let text = String::from_utf8(all).unwrap();
    assert!(
        text.starts_with("HTTP/1.1 200 OK") && text.ends_with("\r\n\r\n"),
        "{text}"
    );
}

#[test]
fn raw_binary_request_with_header_zero() {
    let d = Daemon::start(&[]);
    let r = d.exchange(&post(
        "/v2/models/identity/infer",
        "Inference-Header-Content-Length: 0\r\n",
        b"\x01\x02\x03",
    ));
    assert_eq!(r.status, 200, "{}", r.text());
    let json_len: usize = r
        .header("inference-header-content-length")
        .unwrap()
        .parse()
        .unwrap();
    assert!(r.text()[..json_len]
        .contains(r#""datatype":"UINT8","shape":[1,3],"parameters":{"binary_data_size":3}"#));
    assert_eq!(&r.body[json_len..], b"\x01\x02\x03");

    let r = d.exchange(&post(
        "/v2/models/add_sub/infer",
        "Inference-Header-Content-Length: 0\r\n",
        &[0; 64],
    ));
    assert_eq!(r.status, 400);
    assert!(r.json_error().contains("one input"));
}

/// Python's `requests` sends Content-Length beside a Transfer-Encoding its caller set (Triton's
/// `test_content_encoding_chunked_manually`): the chunked framing wins, as RFC 9112 §6.3 has
/// it, the raw body reaches the decoder whole, and the connection closes after the answer,
/// so bytes framed the other way are never read as a next request.
#[test]
fn chunked_wins_over_content_length_and_the_connection_closes() {
    let d = Daemon::start(&[]);
    let values: Vec<u8> = (0..8u8).flat_map(|v| f32::from(v).to_le_bytes()).collect();
    let mut request = format!(
        "POST /v2/models/identity/infer HTTP/1.1\r\nHost: x\r\nInference-Header-Content-Length: 0\r\n\
         Content-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{:X}\r\n",
        values.len(),
        values.len()
    )
    .into_bytes();
    request.extend_from_slice(&values);
    request.extend_from_slice(b"\r\n0\r\n\r\nGET /v2/health/live HTTP/1.1\r\n\r\n");
    let mut s = d.connect();
    s.write_all(&request).unwrap();
    let r = read_response(&mut s);
    assert_eq!(r.status, 200, "{}", r.text());
    let json_len: usize = (r.header("inference-header-content-length").unwrap())
        .parse()
        .unwrap();
    assert_eq!(&r.body[json_len..], &values[..]);
    assert_eq!(r.header("connection"), Some("close"));
    assert_closed(&mut s);
}

/// RFC 9112 §3.2.2: a server accepts a request target in absolute form, as proxies send it.
#[test]
fn absolute_form_targets_are_served() {
    let d = Daemon::start(&[]);
    let (mut req, _) = identity_fp32(&[1.5, 2.5]);
    let at = req.iter().position(|&b| b == b'/').unwrap();
    req.splice(at..at, format!("http://{}", d.addr).bytes());
    assert!(req.starts_with(format!("POST http://{}/v2/models/identity/infer ", d.addr).as_bytes()));
    let r = d.exchange(&req);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r
        .body
        .ends_with(&[1.5f32.to_le_bytes(), 2.5f32.to_le_bytes()].concat()));
}

/// Each malformed request gets a 4xx with a JSON error on a connection that keeps working.
#[test]
fn bad_requests_get_clear_errors_and_the_connection_survives() {
    let d = Daemon::start(&[]);
    let typed = |dt: &str, shape: &str, size: usize| {
        format!(
            r#"{{"inputs":[{{"name":"INPUT0","shape":{shape},"datatype":"{dt}","parameters":{{"binary_data_size":{size}}}}}]}}"#
        )
    };
    let with_binary = |json: String, binary: &[u8], header_len: usize| {
        let mut body = json.into_bytes();
        body.extend_from_slice(binary);
        post(
            "/v2/models/identity/infer",
            &format!("Inference-Header-Content-Length: {header_len}\r\n"),
            &body,
        )
    };
    let j = typed("FP32", "[1,2]", 8);
    let cases: Vec<(&str, Vec<u8>, u16, &str)> = vec![
        ("lying header length", with_binary(j.clone(), &[0; 8], j.len() + 100), 400, "larger than the body"),
        ("header length inside the JSON", with_binary(j.clone(), &[0; 8], j.len() - 3), 400, "invalid inference request JSON"),
        ("garbage header length", post("/v2/models/identity/infer", "Inference-Header-Content-Length: 12x\r\n", b"{}"), 400, "invalid Inference-Header-Content-Length"),
        ("sizes do not add up", with_binary(j.clone(), &[0; 12], j.len()), 400, "add up to 8"),
        ("size runs past the end", with_binary(j.clone(), &[0; 4], j.len()), 400, "runs past"),
        ("size does not match shape", with_binary(typed("FP32", "[1,3]", 8), &[0; 8], typed("FP32", "[1,3]", 8).len()), 400, "need 12"),
        ("overflowing shape", with_binary(typed("FP32", "[4294967296,4294967296,2]", 8), &[0; 8], typed("FP32", "[4294967296,4294967296,2]", 8).len()), 400, "more elements than fit"),
        ("BYTES prefix past end", with_binary(typed("BYTES", "[1]", 6), &[9, 0, 0, 0, b'a', b'b'], typed("BYTES", "[1]", 6).len()), 400, "length prefix runs past"),
        ("malformed JSON", post("/v2/models/identity/infer", "", b"{\"inputs\": [}"), 400, "invalid inference request JSON"),
        ("unknown datatype", post("/v2/models/identity/infer", "", br#"{"inputs":[{"name":"INPUT0","shape":[1],"datatype":"FP8","data":[1]}]}"#), 400, "unknown datatype 'FP8'"),
        ("unknown input", post("/v2/models/identity/infer", "", br#"{"inputs":[{"name":"X","shape":[1],"datatype":"FP32","data":[1]}]}"#), 400, "unknown input 'X'"),
        ("missing input", post("/v2/models/add_sub/infer", "", br#"{"inputs":[{"name":"INPUT0","shape":[1,16],"datatype":"INT32","data":[0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}]}"#), 400, "missing input 'INPUT1'"),
        ("unknown output", post("/v2/models/identity/infer", "", br#"{"inputs":[{"name":"INPUT0","shape":[1],"datatype":"FP32","data":[1]}],"outputs":[{"name":"NOPE"}]}"#), 400, "unknown output 'NOPE'"),
        ("number too big for UINT8", post("/v2/models/identity/infer", "", br#"{"inputs":[{"name":"INPUT0","shape":[1],"datatype":"UINT8","data":[300]}]}"#), 400, "300 is not a valid UINT8"),
        ("float for INT32", post("/v2/models/identity/infer", "", br#"{"inputs":[{"name":"INPUT0","shape":[1],"datatype":"INT32","data":[1.5]}]}"#), 400, "1.5 is not a valid INT32"),
        ("JSON count mismatch", post("/v2/models/identity/infer", "", br#"{"inputs":[{"name":"INPUT0","shape":[3],"datatype":"INT32","data":[1,2]}]}"#), 400, "has 2 elements but the shape needs 3"),
        ("data and binary both", with_binary(r#"{"inputs":[{"name":"INPUT0","shape":[1],"datatype":"INT8","data":[1],"parameters":{"binary_data_size":1}}]}"#.into(), &[1], 107), 400, "But set 'data' 'binary_data_size'"),
        ("unknown model", post("/v2/models/nope/infer", "", b"{}"), 404, "Request for unknown model: 'nope' is not found"),
        ("unknown version", post("/v2/models/identity/versions/9/infer", "", b"{}"), 404, "Request for unknown model: 'identity' version 9 is not found"),
        ("unknown endpoint", b"GET /v2/nothing/here HTTP/1.1\r\n\r\n".to_vec(), 404, "no such endpoint"),
        ("wrong method", b"GET /v2/models/identity/infer HTTP/1.1\r\n\r\n".to_vec(), 405, "/v2/models/identity/infer takes only POST"),
    ];
    let mut s = d.connect();
    for (what, request, status, message) in cases {
        s.write_all(&request).unwrap();
        let r = read_response(&mut s);
        assert_eq!(r.status, status, "{what}: {}", r.text());
        let error = r.json_error();
        assert!(error.contains(message), "{what}: {error}");
    }
    d.assert_healthy();
}

/// A wrong method is a 405 that names the path as written and says, in `Allow`, what it takes.
#[test]
fn wrong_methods_get_405_with_allow() {
    let d = Daemon::start(&[]);
    let mut s = d.connect();
    let cases: [(&[u8], &str, &str); 4] = [
        (
            b"GET /v2/models/identity/infer HTTP/1.1\r\n\r\n",
            "POST",
            "/v2/models/identity/infer takes only POST",
        ),
        (
            b"POST /v2/models/Some_Model/ready HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "GET, HEAD",
            "/v2/models/Some_Model/ready takes only GET",
        ),
        (
            b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "GET, HEAD",
            "/metrics takes only GET",
        ),
        (
            b"GET /v1/models/identity:predict HTTP/1.1\r\n\r\n",
            "POST",
            "/v1/models/identity:predict takes only POST",
        ),
    ];
    for (request, allow, message) in cases {
        s.write_all(request).unwrap();
        let r = read_response(&mut s);
        assert_eq!(r.status, 405, "{}", r.text());
        assert_eq!(r.header("allow"), Some(allow));
        assert_eq!(r.json_error(), message);
    }
    d.assert_healthy();
}

/// Framing errors are answered, then the connection closes; the daemon goes on.
#[test]
fn limits_and_framing_errors() {
    let d = Daemon::start(&[
        "--max-header-bytes",
        "512",
        "--max-body-bytes",
        "1000",
        "--header-timeout",
        "1",
    ]);
    let big_header = format!("GET /v2 HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(600));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("header too large", big_header.into_bytes(), 431),
        (
            "body too large",
            post("/v2/models/identity/infer", "", &[b' '; 1001]),
            413,
        ),
        (
            "huge Content-Length",
            b"POST /v2/models/identity/infer HTTP/1.1\r\nContent-Length: 107374182400\r\n\r\n"
                .to_vec(),
            413,
        ),
        (
            "chunked body too large",
            b"POST /v2/models/identity/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3e9\r\n"
                .to_vec(),
            413,
        ),
        (
            "bad chunk size",
            b"POST /v2/models/identity/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n"
                .to_vec(),
            400,
        ),
        (
            "malformed head",
            b"GET /v2 HTTP/1.1\r\nBad Header\r\n\r\n".to_vec(),
            400,
        ),
        (
            "unsupported coding",
            b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n".to_vec(),
            501,
        ),
        (
            "endless trailers",
            [
                &b"POST /v2/models/identity/infer HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n"[..],
                &b"X-T: 1\r\n".repeat(3000),
            ]
            .concat(),
            431,
        ),
        (
            "415 names its reason",
            b"POST /v2/models/identity/infer HTTP/1.1\r\nContent-Encoding: br\r\nContent-Length: 1\r\n\r\nx"
                .to_vec(),
            415,
        ),
        (
            "half a head, then silence",
            b"GET /v2 HTTP/1.1\r\nHost: x".to_vec(),
            408,
        ),
    ];
    for (what, request, status) in cases {
        let mut s = d.connect();
        s.write_all(&request).unwrap();
        let r = read_response(&mut s);
        assert_eq!(r.status, status, "{what}: {}", r.text());
        let phrase = r.head.lines().next().unwrap_or_default();
        assert!(!phrase.ends_with("Unknown"), "{what}: {phrase}");
        assert!(!r.json_error().is_empty());
        assert_eq!(r.header("connection"), Some("close"), "{what}");
        assert_closed(&mut s);
    }
    d.assert_healthy();
}

#[test]
fn large_tensor_written_from_its_buffer() {
    for driver in drivers() {
        large_tensor(Daemon::start(&["--io-driver", driver]));
    }
}

/// 602112 bytes each way: larger than a socket buffer, so writes are partial and resumed.
fn large_tensor(d: Daemon) {
    let values: Vec<f32> = (0..150_528).map(|i| i as f32 * 0.5).collect();
    let (req, _) = identity_fp32(&values);
    let mut s = d.connect();
    for _ in 0..3 {
        s.write_all(&req).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let r = read_response(&mut s);
        assert_eq!(r.status, 200);
        let json_len: usize = r
            .header("inference-header-content-length")
            .unwrap()
            .parse()
            .unwrap();
        let got: Vec<f32> = r.body[json_len..]
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(got, values);
    }
}

#[test]
fn sigterm_finishes_requests_in_progress_and_closes_idle_connections() {
    let mut d = Daemon::start(&[]);
    let mut idle = d.connect();
    let mut busy = d.connect();
    let (req, _) = identity_fp32(&[1.0, 2.0, 3.0]);
    let (first, last) = req.split_at(req.len() - 4);
    busy.write_all(first).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    d.terminate();
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        d.wait_exit(Duration::ZERO).is_none(),
        "exited with a request in progress"
    );
    busy.write_all(last).unwrap();
    let r = read_response(&mut busy);
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.body.ends_with(&3.0f32.to_le_bytes()));
    assert_eq!(r.header("connection"), Some("close"));
    assert_closed(&mut busy);
    let status = d
        .wait_exit(Duration::from_secs(10))
        .expect("still running 10 s after SIGTERM");
    assert!(status.success(), "{status}");
    let mut rest = Vec::new();
    assert!(
        matches!(idle.read_to_end(&mut rest), Ok(0) | Err(_)),
        "idle connection left open"
    );
}

#[test]
fn drain_delay_keeps_serving_with_readiness_503_then_exits_despite_idle_clients() {
    let mut d = Daemon::start(&["--drain-delay", "1"]);
    let mut idle = d.connect();
    idle.write_all(b"GET /v2/health/live HTTP/1.1\r\n\r\n")
        .unwrap();
    assert_eq!(read_response(&mut idle).status, 200);
    d.terminate();
    std::thread::sleep(Duration::from_millis(200));
    let ready = d.exchange(b"GET /v2/health/ready HTTP/1.1\r\n\r\n");
    assert_eq!(ready.status, 503, "readiness flips at once");
    assert_eq!(ready.json_error(), "server is not ready");
    let live = d.exchange(b"GET /v2/health/live HTTP/1.1\r\n\r\n");
    assert_eq!(
        (live.status, live.header("connection")),
        (200, Some("keep-alive"))
    );
    d.assert_healthy();
    let started = Instant::now();
    let status = d
        .wait_exit(Duration::from_secs(10))
        .expect("still running with an idle client");
    assert!(status.success(), "{status}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited on the idle connection"
    );
    let mut rest = Vec::new();
    assert!(
        matches!(idle.read_to_end(&mut rest), Ok(0) | Err(_)),
        "idle connection left open"
    );
}

#[test]
fn sd_notify_ready_watchdog_and_stopping() {
    use std::os::unix::net::UnixDatagram;
    let path = std::env::temp_dir().join(format!("tensord-notify-{}.sock", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let socket = UnixDatagram::bind(&path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let notify = path.to_str().unwrap();
    let mut d = Daemon::start_with_env(
        &[],
        &[("NOTIFY_SOCKET", notify), ("WATCHDOG_USEC", "200000")],
    );
    let next = || {
        let mut buf = [0u8; 256];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(
        next(),
        "READY=1\nSTATUS=serving 6 of 6 models, 0 requests/s"
    );
    assert_eq!(
        next(),
        "WATCHDOG=1",
        "the runtimes' heartbeats feed the watchdog"
    );
    for _ in 0..100 {
        d.assert_healthy();
    }
    // Every 5 s the status line carries the request rate.
    let status = (0..100)
        .map(|_| next())
        .find(|m| m.starts_with("STATUS="))
        .expect("a status line");
    let rate: u32 = status
        .strip_prefix("STATUS=serving 6 of 6 models, ")
        .and_then(|rest| rest.strip_suffix(" requests/s"))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{status}"));
    assert!(rate >= 1, "{status}");
    d.terminate();
    let stopping = (0..20)
        .map(|_| next())
        .find(|m| m.starts_with("STOPPING=1"));
    assert_eq!(stopping.as_deref(), Some("STOPPING=1\nSTATUS=draining"));
    assert!(d
        .wait_exit(Duration::from_secs(10))
        .is_some_and(|s| s.success()));
    let _ = std::fs::remove_file(&path);
}

#[test]
fn config_file_settings_apply_and_flags_override_them() {
    let path = std::env::temp_dir().join(format!("tensord-config-{}.toml", std::process::id()));
    std::fs::write(&path, "max_header_bytes = 512\nmax_body_bytes = 100\n").unwrap();
    let config = path.to_str().unwrap();
    let d = Daemon::start(&["--config", config, "--max-body-bytes", "1000"]);
    let big_header = format!("GET /v2 HTTP/1.1\r\nX-Big: {}\r\n\r\n", "a".repeat(600));
    assert_eq!(
        d.exchange(big_header.as_bytes()).status,
        431,
        "the file's header limit"
    );
    let body = post("/v2/models/identity/infer", "", &[b' '; 500]);
    assert_eq!(
        d.exchange(&body).status,
        400,
        "the flag's body limit (1000), not the file's (100)"
    );
    let printed = Command::new(env!("CARGO_BIN_EXE_tensord"))
        .args(["--config", config, "--print-config"])
        .output()
        .unwrap();
    let text = String::from_utf8(printed.stdout).unwrap();
    assert!(
        text.contains("max_header_bytes = 512\n") && text.contains("max_body_bytes = 100\n"),
        "{text}"
    );
    std::fs::write(&path, "max_header_byte = 512\n").unwrap();
    let refused = Command::new(env!("CARGO_BIN_EXE_tensord"))
        .args(["--config", config])
        .output()
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let message = String::from_utf8(refused.stderr).unwrap();
    assert!(
        message.contains("unknown key 'max_header_byte'") && message.contains(config),
        "{message}"
    );
    std::fs::remove_file(&path).unwrap();
}

/// Starts tensord as systemd would after socket activation: `socket` as fd 3, LISTEN_FDS=1 and
/// LISTEN_PID set to the daemon's own pid (by a shell that execs it).
fn start_socket_activated(socket: &TcpListener, extra: &[&str]) -> Child {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let fd = socket.as_raw_fd();
    let repo = test_repo();
    let mut command = Command::new("sh");
    command
        .args(["-c", "LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\""])
        .arg(env!("CARGO_BIN_EXE_tensord"))
        // An address that cannot be bound: the inherited socket must be used instead.
        .args(["--http-addr", "192.0.2.1:9", "--model-repository", repo])
        .args(["--threads", "2", "--drain-delay", "0", "--grpc-addr", "off"])
        .args(extra)
        .stderr(Stdio::null());
    // SAFETY: dup2 and fcntl are async-signal-safe; they run in the child between fork and
    // exec. dup2 onto itself would keep close-on-exec, so that case clears the flag instead.
    unsafe {
        command.pre_exec(move || {
            let done = match fd {
                3 => libc::fcntl(3, libc::F_SETFD, 0),
                _ => libc::dup2(fd, 3) - 3,
            };
            match done {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            }
        });
    }
    command.spawn().unwrap()
}

/// Sends one request on a fresh connection to `addr` and reads the answer.
fn exchange_at(addr: &str, raw: &[u8]) -> Response {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(raw).unwrap();
    read_response(&mut s)
}

#[test]
fn socket_activation_serves_the_inherited_socket_across_a_restart() {
    let socket = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap().to_string();
    let (req, _) = identity_fp32(&[4.0, 5.0]);
    for driver in drivers() {
        let mut first = start_socket_activated(&socket, &["--io-driver", driver]);
        // Connections made before the daemon is up wait in the socket's queue.
        let r = exchange_at(&addr, &req);
        assert_eq!(r.status, 200, "{}", r.text());
        assert!(r.body.ends_with(&5.0f32.to_le_bytes()));
        unsafe { libc_kill(first.id() as i32, 15) };
        assert!(first.wait().unwrap().success());
        // Down between two instances: a client connects anyway, and is answered by the next.
        let waiting = std::thread::spawn({
            let (addr, req) = (addr.clone(), req.clone());
            move || exchange_at(&addr, &req)
        });
        std::thread::sleep(Duration::from_millis(300));
        let mut second = start_socket_activated(&socket, &["--io-driver", driver]);
        let r = waiting.join().unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        unsafe { libc_kill(second.id() as i32, 15) };
        assert!(second.wait().unwrap().success());
    }
}

#[test]
fn metrics_port_serves_metrics_alone() {
    let metrics = format!("127.0.0.1:{}", free_port());
    let d = Daemon::start(&["--metrics-addr", &metrics]);
    d.assert_healthy();
    let r = exchange_at(&metrics, b"GET /metrics HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 200);
    let text = r.text();
    assert!(
        text.contains("nv_inference_request_success{model=\"identity\",version=\"1\"} 1\n"),
        "{text}"
    );
    let r = exchange_at(&metrics, b"GET /v2/health/ready HTTP/1.1\r\n\r\n");
    assert_eq!(r.status, 404);
    assert_eq!(r.json_error(), "this port serves /metrics only");
    // The main port serves /metrics too.
    let main = d.exchange(b"GET /metrics HTTP/1.1\r\n\r\n");
    assert!(main
        .text()
        .contains("tensord_request_bytes_count{model=\"identity\",version=\"1\"} 1\n"));
}
