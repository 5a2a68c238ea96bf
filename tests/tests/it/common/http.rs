//! Raw HTTP/1.1 exchanges: request targets no client library leaves alone
//! (`url` re-encodes quotes, braces and apostrophes, hyper cuts `#`),
//! malformed requests, and pipelined ones.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// An HTTP answer read off the socket.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "not JSON ({e}): {} {:?}",
                self.head,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    pub fn error(&self) -> String {
        self.json()["error"].as_str().unwrap_or("").to_string()
    }
}

/// Sends `bytes` as they are and reads the answers until the server
/// closes (the last request should say `connection: close`).
pub async fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<Answer> {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), s.read_to_end(&mut got))
        .await
        .expect("an answer within 20 s")
        .ok();
    let mut answers = Vec::new();
    let mut rest = &got[..];
    while !rest.is_empty() {
        let end = rest
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a complete answer head")
            + 4;
        let head = String::from_utf8_lossy(&rest[..end]).to_string();
        let status = head[9..12].parse().unwrap();
        let len: usize = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.eq_ignore_ascii_case("content-length")
                    .then(|| v.trim().parse().ok())?
            })
            .unwrap_or(0);
        let body = rest[end..(end + len).min(rest.len())].to_vec();
        rest = &rest[(end + len).min(rest.len())..];
        answers.push(Answer { status, head, body });
    }
    answers
}

/// One request (which should close the connection): its answer.
pub async fn request(addr: SocketAddr, bytes: &[u8]) -> Answer {
    let mut bytes = bytes.to_vec();
    if !String::from_utf8_lossy(&bytes)
        .to_ascii_lowercase()
        .contains("connection: close")
    {
        // Before the blank line ending the head.
        let at = bytes.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
        bytes.splice(at + 2..at + 2, b"connection: close\r\n".iter().copied());
    }
    exchange(addr, &bytes)
        .await
        .into_iter()
        .next()
        .expect("an answer")
}

/// `PUT <target>` with `body`, closing the connection.
pub fn raw_put(target: impl AsRef<[u8]>, body: &[u8]) -> Vec<u8> {
    let mut r = b"PUT ".to_vec();
    r.extend_from_slice(target.as_ref());
    r.extend_from_slice(
        format!(
            " HTTP/1.1\r\nhost: c\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    );
    r.extend_from_slice(body);
    r
}

/// `GET <target>`, closing the connection.
pub fn raw_get(target: impl AsRef<[u8]>) -> Vec<u8> {
    let mut r = b"GET ".to_vec();
    r.extend_from_slice(target.as_ref());
    r.extend_from_slice(b" HTTP/1.1\r\nhost: c\r\nconnection: close\r\n\r\n");
    r
}
