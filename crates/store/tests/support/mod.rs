//! A small HTTP/1.1 server on 127.0.0.1 that imitates the hub's `resolve` endpoint, with
//! faults on demand: dropped connections, stalls, ignored ranges, wrong bytes, error statuses.
//! Also shared by the CLI tests (`#[path]`-included), so it uses only std.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the server does to one response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Announce the full length, send this many body bytes, close the connection.
    DropAfter(usize),
    /// Send this many body bytes, then send nothing more for a long time.
    StallAfter(usize),
    /// Serve the whole file from the start with 200, whatever the Range header says.
    IgnoreRange,
    /// Flip one byte in the middle of the body.
    Corrupt,
    /// Append bytes beyond the file (and announce them in Content-Length).
    ExtraBytes(usize),
    /// Answer with this status and an empty body.
    Status(u16),
    /// Answer a Range request with 206 but the whole file (`Content-Range: bytes 0-…`).
    RangeFromZero,
}

/// One request the server saw.
#[derive(Clone, Debug)]
pub struct Request {
    pub path: String,
    pub range: Option<String>,
    pub authorization: Option<String>,
    /// The status line's code of the answer.
    pub status: u16,
    /// Body bytes the answer carries (a client that hangs up early receives fewer).
    pub body_bytes: usize,
}

#[derive(Default)]
struct State {
    files: HashMap<String, Arc<Vec<u8>>>,
    redirects: HashMap<String, String>,
    /// Faults for the next requests, one each.
    faults: VecDeque<Fault>,
    /// A fault for every request once the queue is empty.
    always: Option<Fault>,
    /// Bytes per second, 0 for unlimited.
    rate: usize,
    /// When set, faults apply only to paths starting with it (not to an API listing, say).
    fault_prefix: Option<String>,
    log: Vec<Request>,
}

/// A running server; it lives until the test process ends.
#[derive(Clone)]
pub struct Server {
    pub base: String,
    state: Arc<Mutex<State>>,
}

impl Server {
    pub fn start() -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let addr = listener.local_addr().expect("local addr");
        let state = Arc::new(Mutex::new(State::default()));
        let st = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let st = st.clone();
                std::thread::spawn(move || {
                    let _ = handle(conn, &st);
                });
            }
        });
        Server {
            base: format!("http://{addr}"),
            state,
        }
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }

    pub fn add_file(&self, path: &str, bytes: Vec<u8>) {
        self.with(|s| s.files.insert(path.to_owned(), Arc::new(bytes)));
    }

    pub fn redirect(&self, from: &str, to: &str) {
        self.with(|s| s.redirects.insert(from.to_owned(), to.to_owned()));
    }

    pub fn push_fault(&self, f: Fault) {
        self.with(|s| s.faults.push_back(f));
    }

    pub fn set_always(&self, f: Option<Fault>) {
        self.with(|s| s.always = f);
    }

    pub fn set_fault_prefix(&self, prefix: &str) {
        self.with(|s| s.fault_prefix = Some(prefix.to_owned()));
    }

    pub fn set_rate(&self, bytes_per_second: usize) {
        self.with(|s| s.rate = bytes_per_second);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.with(|s| s.log.clone())
    }

    pub fn clear_log(&self) {
        self.with(|s| s.log.clear());
    }
}

fn handle(conn: TcpStream, state: &Mutex<State>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut line = String::new();
    reader.read_line(&mut line)?;
    let path = line.split_whitespace().nth(1).unwrap_or("/").to_owned();
    let (mut range, mut authorization) = (None, None);
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h)? == 0 || h == "\r\n" || h == "\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            let v = v.trim().to_owned();
            match k.trim().to_ascii_lowercase().as_str() {
                "range" => range = Some(v),
                "authorization" => authorization = Some(v),
                _ => {}
            }
        }
    }
    let (file, redirect, fault, rate) = {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        let redirect = s.redirects.get(&path).cloned();
        let file = s.files.get(&path).cloned();
        let faulty = s.fault_prefix.as_ref().is_none_or(|p| path.starts_with(p));
        let fault = if redirect.is_none() && file.is_some() && faulty {
            s.faults.pop_front().or_else(|| s.always.clone())
        } else {
            None
        };
        (file, redirect, fault, s.rate)
    };
    let mut out = conn;
    let log_sent = |status: u16, body_bytes: usize| {
        let mut s = state.lock().unwrap_or_else(|p| p.into_inner());
        s.log.push(Request {
            path: path.clone(),
            range: range.clone(),
            authorization: authorization.clone(),
            status,
            body_bytes,
        });
    };
    let log = |status: u16| log_sent(status, 0);
    if let Some(to) = redirect {
        log(302);
        write!(
            out,
            "HTTP/1.1 302 Found\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return out.flush();
    }
    let Some(file) = file else {
        log(404);
        write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return out.flush();
    };
    if let Some(Fault::Status(code)) = fault {
        log(code);
        write!(
            out,
            "HTTP/1.1 {code} Oops\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return out.flush();
    }
    // `bytes=START-` or `bytes=START-END` (END inclusive, clipped to the file).
    let (start, last) = match (&range, &fault) {
        (_, Some(Fault::IgnoreRange)) => (None, None),
        (Some(_), Some(Fault::RangeFromZero)) => (Some(0), None),
        (Some(r), _) => match r.strip_prefix("bytes=").and_then(|r| r.split_once('-')) {
            Some((a, b)) => (
                a.trim().parse::<usize>().ok(),
                b.trim().parse::<usize>().ok(),
            ),
            None => (None, None),
        },
        (None, _) => (None, None),
    };
    let end = last.map_or(file.len(), |l| l.saturating_add(1).min(file.len()));
    let mut body: Vec<u8> = match start {
        Some(s) if s >= file.len() || end <= s => {
            log(416);
            write!(
                out,
                "HTTP/1.1 416 Range Not Satisfiable\r\nContent-Range: bytes */{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                file.len()
            )?;
            return out.flush();
        }
        Some(s) => file[s..end].to_vec(),
        None => file.to_vec(),
    };
    match fault {
        Some(Fault::Corrupt) => {
            let mid = body.len() / 2;
            body[mid] ^= 0xff;
        }
        Some(Fault::ExtraBytes(n)) => body.extend(std::iter::repeat_n(0u8, n)),
        _ => {}
    }
    let status = if start.is_some() { 206 } else { 200 };
    let mut head = if let Some(s) = start {
        format!(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {s}-{}/{}\r\n",
            end - 1,
            file.len()
        )
    } else {
        "HTTP/1.1 200 OK\r\n".to_owned()
    };
    head.push_str(&format!(
        "Content-Length: {}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n\r\n",
        body.len()
    ));
    out.write_all(head.as_bytes())?;
    let limit = match fault {
        Some(Fault::DropAfter(n)) | Some(Fault::StallAfter(n)) => n.min(body.len()),
        _ => body.len(),
    };
    log_sent(status, limit);
    let chunk = if rate > 0 {
        (rate / 20).max(1)
    } else {
        64 * 1024
    };
    for piece in body[..limit].chunks(chunk) {
        out.write_all(piece)?;
        if rate > 0 {
            out.flush()?;
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    out.flush()?;
    match fault {
        Some(Fault::DropAfter(_)) => {
            let _ = out.shutdown(Shutdown::Both);
        }
        Some(Fault::StallAfter(_)) => std::thread::sleep(Duration::from_secs(120)),
        _ => {}
    }
    Ok(())
}

/// Deterministic, incompressible-looking test bytes.
pub fn synthetic(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// Lowercase hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(bytes);
    d.iter().map(|b| format!("{b:02x}")).collect()
}
