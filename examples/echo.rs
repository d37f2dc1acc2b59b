//! The load runs' reference: the least an HTTP server on the same runtime can do.
//! Parses the head, reads the Content-Length body and answers 200 with the body echoed,
//! one monoio runtime and SO_REUSEPORT listener per thread, like tensord.
//!
//! Usage: echo ADDR:PORT THREADS epoll|uring

use bytes::{Bytes, BytesMut};
use monoio::net::{ListenerOpts, TcpListener, TcpStream};

use tensord::http::{parse_head, BodyFraming, Limits};
use tensord::server::{read_more, write_all_vectored, IoParts};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let addr: std::net::SocketAddr = args.get(1).map_or("127.0.0.1:8080", |s| s).parse().unwrap();
    let threads: usize = args.get(2).map_or(2, |s| s.parse().unwrap());
    let uring = args.get(3).is_some_and(|s| s == "uring");
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            std::thread::spawn(move || {
                if uring {
                    let mut rt = monoio::RuntimeBuilder::<monoio::IoUringDriver>::new()
                        .build()
                        .unwrap();
                    rt.block_on(accept_loop(addr));
                } else {
                    let mut rt = monoio::RuntimeBuilder::<monoio::LegacyDriver>::new()
                        .build()
                        .unwrap();
                    rt.block_on(accept_loop(addr));
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
}

async fn accept_loop(addr: std::net::SocketAddr) {
    let opts = ListenerOpts::new().reuse_port(true).backlog(4096);
    let listener = TcpListener::bind_with_config(addr, &opts).unwrap();
    while let Ok((stream, _)) = listener.accept().await {
        let _ = stream.set_nodelay(true);
        monoio::spawn(serve(stream));
    }
}

async fn serve(mut stream: TcpStream) {
    let limits = Limits::default();
    let mut buf = BytesMut::with_capacity(16 * 1024);
    loop {
        let (head_len, body_len) = loop {
            match parse_head(&buf, &limits) {
                Ok(Some((head, len))) => match head.framing() {
                    BodyFraming::Length(n) => break (len, n as usize),
                    BodyFraming::Chunked => return,
                },
                Ok(None) => {}
                Err(_) => return,
            }
            if read_more(&mut stream, &mut buf, 16 * 1024)
                .await
                .unwrap_or(0)
                == 0
            {
                return;
            }
        };
        let _ = buf.split_to(head_len);
        while buf.len() < body_len {
            let want = body_len - buf.len();
            if read_more(&mut stream, &mut buf, want).await.unwrap_or(0) == 0 {
                return;
            }
        }
        let body = buf.split_to(body_len).freeze();
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
        let parts = IoParts::new(vec![Bytes::from(head), body]);
        if write_all_vectored(&mut stream, parts, None).await.is_err() {
            return;
        }
    }
}
