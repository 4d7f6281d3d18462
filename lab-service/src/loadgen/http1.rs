//! A minimal HTTP/1.1 keep-alive client, all the load generator needs and
//! no more: plain `http://`, one request at a time per connection,
//! `Content-Length` or chunked bodies. Each sender (a closed loop, an
//! open-loop sender task) keeps its own connection in a [`ConnectionSlot`]:
//! no pool, no lock.
//!
//! Why not a general client: the calling task writes the request and reads
//! the answer on the socket itself (no connection task, no channels, no
//! per-request allocation beyond two buffers), which is what lets one
//! process generate load close to `wrk`'s on the same cores (see
//! `docs/benchmarks.md`). The server under test is ours (hyper), so the
//! subset of HTTP/1.1 it needs to understand is known.

use std::io;
use std::net::SocketAddr;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Largest response body accepted.
const MAX_BODY: usize = 16 * 1024 * 1024;
const READ_CHUNK: usize = 8 * 1024;

/// Why a request failed (for debug logs; the load generator counts them as errors).
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("i/o: {0}")]
    Io(#[from] io::Error),
    #[error("malformed response: {0}")]
    Malformed(&'static str),
    #[error("connection closed before a complete response")]
    Closed,
}

/// Where requests go: a resolved address, the `Host` header and the path.
#[derive(Debug, Clone)]
pub struct Endpoint {
    addr: SocketAddr,
    host: String,
    path: String,
}

impl Endpoint {
    /// Parse an `http://host[:port]/path?query` URL and resolve its host once.
    pub async fn resolve(raw: &str) -> Result<Self, String> {
        let url = reqwest::Url::parse(raw).map_err(|e| format!("{raw:?}: {e}"))?;
        if url.scheme() != "http" {
            return Err(format!("{raw:?}: the load generator speaks plain http:// only"));
        }
        let host = url.host_str().ok_or_else(|| format!("{raw:?}: no host"))?.to_string();
        let port = url.port_or_known_default().unwrap_or(80);
        let addr = tokio::net::lookup_host((host.trim_start_matches('[').trim_end_matches(']'), port))
            .await
            .map_err(|e| format!("{raw:?}: cannot resolve {host}: {e}"))?
            .next()
            .ok_or_else(|| format!("{raw:?}: {host} resolves to no address"))?;
        let mut path = url.path().to_string();
        if let Some(q) = url.query() {
            path.push('?');
            path.push_str(q);
        }
        let host = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host,
        };
        Ok(Self { addr, host, path })
    }
}

/// One response: status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

struct Connection {
    stream: TcpStream,
    /// Bytes read but not consumed yet.
    buf: Vec<u8>,
    /// Where reads land before they are appended to `buf` (allocated and zeroed once).
    scratch: Box<[u8]>,
}

/// One sender's keep-alive connection to the endpoint: empty until its
/// first request, and again after the server closed it or a request on it
/// failed or was abandoned (a timeout).
#[derive(Default)]
pub struct ConnectionSlot(Option<Connection>);

impl ConnectionSlot {
    /// Whether a connection is open for the next request.
    #[cfg(test)]
    pub fn is_open(&self) -> bool {
        self.0.is_some()
    }
}

/// Requests to one endpoint, each on the caller's own connection.
pub struct Client {
    endpoint: Endpoint,
}

impl Client {
    pub fn new(endpoint: Endpoint) -> Self {
        Self { endpoint }
    }

    /// The request head and body for `method` with extra `headers`.
    pub fn encode(&self, method: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(128 + body.len());
        let e = &self.endpoint;
        out.extend_from_slice(format!("{method} {} HTTP/1.1\r\nhost: {}\r\n", e.path, e.host).as_bytes());
        for (name, value) in headers {
            out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
        }
        if !body.is_empty() || method != "GET" {
            out.extend_from_slice(format!("content-length: {}\r\n", body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body);
        out
    }

    /// Send an encoded request on the connection in `slot` (opening one
    /// if it is empty) and read the whole response; the connection goes
    /// back into the slot if it may be reused. A reused connection the
    /// server closed while idle is replaced once, but only when not a byte
    /// of the response had arrived. Dropped mid-request (a timeout), the
    /// future leaves the slot empty.
    pub async fn send(&self, slot: &mut ConnectionSlot, request: &[u8]) -> Result<Response, HttpError> {
        let (mut conn, mut retry) = match slot.0.take() {
            Some(c) => (c, true),
            None => (self.connect().await?, false),
        };
        loop {
            match exchange(&mut conn, request).await {
                Ok((response, keep_alive)) => {
                    if keep_alive {
                        slot.0 = Some(conn);
                    }
                    return Ok(response);
                }
                Err(Attempt::Untouched(_)) if retry => {
                    retry = false;
                    conn = self.connect().await?;
                }
                Err(Attempt::Untouched(e) | Attempt::Broken(e)) => return Err(e),
            }
        }
    }

    async fn connect(&self) -> Result<Connection, HttpError> {
        let stream = TcpStream::connect(self.endpoint.addr).await?;
        stream.set_nodelay(true)?;
        Ok(Connection {
            stream,
            buf: Vec::with_capacity(READ_CHUNK),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
        })
    }
}

enum Attempt {
    /// Failed before any response byte arrived (safe to retry on a fresh connection).
    Untouched(HttpError),
    Broken(HttpError),
}

/// Read more bytes into `conn.buf`; `Ok(0)` at end of stream.
async fn fill(conn: &mut Connection) -> io::Result<usize> {
    let n = conn.stream.read(&mut conn.scratch).await?;
    conn.buf.extend_from_slice(&conn.scratch[..n]);
    Ok(n)
}

/// Write the request, read one response; returns it and whether the connection may be reused.
async fn exchange(conn: &mut Connection, request: &[u8]) -> Result<(Response, bool), Attempt> {
    conn.buf.clear();
    conn.stream
        .write_all(request)
        .await
        .map_err(|e| Attempt::Untouched(e.into()))?;
    loop {
        let head_end = loop {
            if let Some(end) = find(&conn.buf, b"\r\n\r\n") {
                break end + 4;
            }
            if conn.buf.len() > MAX_HEAD {
                return Err(Attempt::Broken(HttpError::Malformed("response head too large")));
            }
            let before = conn.buf.len();
            match fill(conn).await {
                Ok(0) if before == 0 => return Err(Attempt::Untouched(HttpError::Closed)),
                Ok(0) => return Err(Attempt::Broken(HttpError::Closed)),
                Ok(_) => {}
                Err(e) if before == 0 => return Err(Attempt::Untouched(e.into())),
                Err(e) => return Err(Attempt::Broken(e.into())),
            }
        };
        let head = parse_head(&conn.buf[..head_end]).map_err(Attempt::Broken)?;
        conn.buf.drain(..head_end);
        if (100..200).contains(&head.status) {
            continue; // an interim response (100 Continue): the real one follows
        }
        let body = read_body(conn, &head).await.map_err(Attempt::Broken)?;
        let keep_alive = head.keep_alive && !matches!(head.framing, Framing::UntilClose);
        return Ok((
            Response {
                status: head.status,
                body,
            },
            keep_alive,
        ));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

#[derive(Debug, PartialEq, Eq)]
struct Head {
    status: u16,
    framing: Framing,
    keep_alive: bool,
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn parse_head(raw: &[u8]) -> Result<Head, HttpError> {
    let text = std::str::from_utf8(raw).map_err(|_| HttpError::Malformed("response head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(HttpError::Malformed("not an HTTP/1.x status line"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .filter(|s| (100..1000).contains(s))
        .ok_or(HttpError::Malformed("bad status code"))?;
    let mut keep_alive = version != "HTTP/1.0";
    let mut length = None;
    let mut chunked = false;
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').ok_or(HttpError::Malformed("header without ':'"))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| HttpError::Malformed("bad content-length"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().split(',').any(|v| v.trim() == "chunked");
        } else if name.eq_ignore_ascii_case("connection") {
            let v = value.to_ascii_lowercase();
            if v.contains("close") {
                keep_alive = false;
            } else if v.contains("keep-alive") {
                keep_alive = true;
            }
        }
    }
    let framing = if status == 204 || status == 304 {
        Framing::Length(0)
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::UntilClose
    };
    Ok(Head {
        status,
        framing,
        keep_alive,
    })
}

async fn read_body(conn: &mut Connection, head: &Head) -> Result<Vec<u8>, HttpError> {
    match head.framing {
        Framing::Length(n) => {
            if n > MAX_BODY {
                return Err(HttpError::Malformed("response body too large"));
            }
            take(conn, n).await
        }
        Framing::UntilClose => {
            while fill(conn).await? > 0 {
                if conn.buf.len() > MAX_BODY {
                    return Err(HttpError::Malformed("response body too large"));
                }
            }
            Ok(std::mem::take(&mut conn.buf))
        }
        Framing::Chunked => {
            let mut body = Vec::new();
            loop {
                let line = take_line(conn).await?;
                let size_hex = line.split(';').next().unwrap_or_default().trim();
                let size = usize::from_str_radix(size_hex, 16).map_err(|_| HttpError::Malformed("bad chunk size"))?;
                if size == 0 {
                    // trailers, up to an empty line
                    while !take_line(conn).await?.is_empty() {}
                    return Ok(body);
                }
                if body.len() + size > MAX_BODY {
                    return Err(HttpError::Malformed("response body too large"));
                }
                body.extend_from_slice(&take(conn, size).await?);
                if !take_line(conn).await?.is_empty() {
                    return Err(HttpError::Malformed("chunk not followed by CRLF"));
                }
            }
        }
    }
}

/// The next `n` bytes.
async fn take(conn: &mut Connection, n: usize) -> Result<Vec<u8>, HttpError> {
    while conn.buf.len() < n {
        if fill(conn).await? == 0 {
            return Err(HttpError::Closed);
        }
    }
    let rest = conn.buf.split_off(n);
    Ok(std::mem::replace(&mut conn.buf, rest))
}

/// The next line, without its CRLF.
async fn take_line(conn: &mut Connection) -> Result<String, HttpError> {
    loop {
        if let Some(end) = find(&conn.buf, b"\r\n") {
            let line = String::from_utf8_lossy(&conn.buf[..end]).into_owned();
            conn.buf.drain(..end + 2);
            return Ok(line);
        }
        if conn.buf.len() > MAX_HEAD {
            return Err(HttpError::Malformed("line too long"));
        }
        if fill(conn).await? == 0 {
            return Err(HttpError::Closed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::net::TcpListener;

    #[test]
    fn heads_tell_status_framing_and_keep_alive() {
        let head = |raw: &str| parse_head(raw.as_bytes()).unwrap();
        assert_eq!(
            head("HTTP/1.1 201 Created\r\ncontent-type: application/json\r\nContent-Length: 12\r\n\r\n"),
            Head {
                status: 201,
                framing: Framing::Length(12),
                keep_alive: true
            }
        );
        let chunked = head("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\nConnection: close\r\n\r\n");
        assert_eq!((chunked.framing, chunked.keep_alive), (Framing::Chunked, false));
        let old = head("HTTP/1.0 200 OK\r\n\r\n");
        assert_eq!((old.framing, old.keep_alive), (Framing::UntilClose, false));
        assert_eq!(head("HTTP/1.1 204 No Content\r\n\r\n").framing, Framing::Length(0));
        assert_eq!(
            head("HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\n\r\n").status,
            503
        );
        for bad in [
            "HTTP/2 200\r\n\r\n",
            "HTTP/1.1 abc OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nnocolon\r\n\r\n",
        ] {
            assert!(parse_head(bad.as_bytes()).is_err(), "{bad:?}");
        }
    }

    /// A server that answers each connection's requests with `replies`, in
    /// order (one reply per request), then closes it. Also returns how
    /// many connections it accepted.
    async fn scripted(replies: Vec<&'static str>) -> (String, Arc<Mutex<usize>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/x?y=1", listener.local_addr().unwrap());
        let accepted = Arc::new(Mutex::new(0));
        let counter = accepted.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                *counter.lock().unwrap() += 1;
                let replies = replies.clone();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    for reply in replies {
                        let mut seen = Vec::new();
                        while find(&seen, b"\r\n\r\n").is_none() {
                            let n = socket.read(&mut buf).await.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            seen.extend_from_slice(&buf[..n]);
                        }
                        socket.write_all(reply.as_bytes()).await.unwrap();
                    }
                });
            }
        });
        (url, accepted)
    }

    #[tokio::test]
    async fn reads_length_and_chunked_bodies_on_one_kept_alive_connection() {
        let (url, accepted) = scripted(vec![
            "HTTP/1.1 201 Created\r\ncontent-length: 5\r\n\r\nhello",
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3;x=1\r\nabc\r\n2\r\nde\r\n0\r\ntrailer: t\r\n\r\n",
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 503 Busy\r\ncontent-length: 0\r\n\r\n",
        ])
        .await;
        let client = Client::new(Endpoint::resolve(&url).await.unwrap());
        let get = client.encode("GET", &[], b"");
        assert!(String::from_utf8_lossy(&get).starts_with("GET /x?y=1 HTTP/1.1\r\nhost: 127.0.0.1:"));

        let mut slot = ConnectionSlot::default();
        let first = client.send(&mut slot, &get).await.unwrap();
        let second = client.send(&mut slot, &get).await.unwrap();
        let third = client
            .send(&mut slot, &client.encode("POST", &[("idempotency-key", "k")], b"{}"))
            .await
            .unwrap();

        assert_eq!((first.status, first.body.as_slice()), (201, &b"hello"[..]));
        assert_eq!((second.status, second.body.as_slice()), (200, &b"abcde"[..]));
        assert_eq!((third.status, third.body.len()), (503, 0));
        assert!(slot.is_open(), "the connection is kept for the next request");
        assert_eq!(*accepted.lock().unwrap(), 1, "one connection served all three");
    }

    #[tokio::test]
    async fn a_connection_closed_while_idle_is_replaced_once() {
        // each connection answers one request, then the server closes it
        let (url, accepted) = scripted(vec!["HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"]).await;
        let client = Client::new(Endpoint::resolve(&url).await.unwrap());
        let get = client.encode("GET", &[], b"");
        let mut slot = ConnectionSlot::default();
        for _ in 0..3 {
            let r = client.send(&mut slot, &get).await.unwrap();
            assert_eq!(r.body, b"ok");
        }
        assert_eq!(*accepted.lock().unwrap(), 3, "a fresh connection for each request");
    }

    #[tokio::test]
    async fn only_plain_http_is_spoken() {
        assert!(Endpoint::resolve("https://127.0.0.1/")
            .await
            .unwrap_err()
            .contains("http://"));
        assert!(Endpoint::resolve("not a url").await.is_err());
    }
}
