//! What the tests' stub HTTP servers share: reading one request off a connection.

use std::io::BufRead;

/// One request as a stub reads it: the head's lines (request line and headers, each ending
/// in CRLF) and the body (`Content-Length` bytes).
// Each test binary that includes this module reads the parts it needs.
#[allow(dead_code)]
pub struct StubRequest {
    pub head: String,
    pub body: Vec<u8>,
}

/// Reads one request; None when the connection ends (or fails) before it is whole.
pub fn read_request(reader: &mut impl BufRead) -> Option<StubRequest> {
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
