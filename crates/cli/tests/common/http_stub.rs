//! What the tests' stub HTTP servers share: a listener on 127.0.0.1 that reads each
//! connection's request and hands it to the stub's own answer.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;

/// One request as a stub reads it: the head's lines (request line and headers, each ending
/// in CRLF) and the body (`Content-Length` bytes).
// Each test binary that includes this module reads the parts it needs.
#[allow(dead_code)]
pub struct StubRequest {
    pub head: String,
    pub body: Vec<u8>,
}

/// Reads one request; None when the connection ends (or fails) before it is whole.
fn read_request(reader: &mut impl BufRead) -> Option<StubRequest> {
    let mut head = String::new();
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        if line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().ok()?;
        }
        head.push_str(&line);
    }
    let mut body = vec![0u8; len];
    reader.read_exact(&mut body).ok()?;
    Some(StubRequest { head, body })
}

/// Listens on a free 127.0.0.1 port; each connection, on a thread of its own, has its request
/// read and goes to `answer` with it (connections that end first are dropped). Returns
/// `host:port`.
pub fn serve<F>(answer: F) -> String
where
    F: Fn(TcpStream, StubRequest) + Send + Sync + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a stub port");
    let addr = listener
        .local_addr()
        .expect("the stub's address")
        .to_string();
    let answer = Arc::new(answer);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let answer = answer.clone();
            std::thread::spawn(move || {
                let Ok(read_half) = conn.try_clone() else {
                    return;
                };
                if let Some(request) = read_request(&mut BufReader::new(read_half)) {
                    answer(conn, request);
                }
            });
        }
    });
    addr
}
