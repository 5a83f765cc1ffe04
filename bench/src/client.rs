//! A minimal sequential HTTP/1.1 client on one keep-alive connection: one
//! request at a time, the next sent when the previous response is read. The
//! load for measures that count (instructions under callgrind, host calls,
//! requests between config pushes), where what matters is that every arm gets
//! exactly the same requests, not their rate.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context, Result};

pub struct Client {
    stream: TcpStream,
    request: Vec<u8>,
    buf: Vec<u8>,
}

impl Client {
    /// Connects to `127.0.0.1:port`; every request is `GET path` with `Host:
    /// host` and `headers`.
    pub fn connect(port: u16, host: &str, path: &str, headers: &[(String, String)]) -> Result<Client> {
        let stream = TcpStream::connect(("127.0.0.1", port)).with_context(|| format!("connecting to port {port}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(60)))?;
        stream.set_nodelay(true)?;
        let mut request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n");
        for (k, v) in headers {
            request.push_str(&format!("{k}: {v}\r\n"));
        }
        request.push_str("\r\n");
        Ok(Client { stream, request: request.into_bytes(), buf: Vec::new() })
    }

    /// Sends `n` requests one after the other; each must be answered 200.
    pub fn run(&mut self, n: usize) -> Result<()> {
        for i in 0..n {
            let status = self.get()?;
            if status != 200 {
                bail!("request {} of {n} answered {status}", i + 1);
            }
        }
        Ok(())
    }

    /// One request; the response's status (the body is read and dropped).
    pub fn get(&mut self) -> Result<u16> {
        self.stream.write_all(&self.request).context("sending a request")?;
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i + 4;
            }
            self.fill()?;
        };
        let head = String::from_utf8_lossy(&self.buf[..head_end]).to_string();
        let status: u16 =
            head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("a response without a status")?;
        let mut length = None;
        for line in head.lines().skip(1) {
            let Some((name, value)) = line.split_once(':') else { continue };
            let name = name.trim().to_ascii_lowercase();
            if name == "content-length" {
                length = value.trim().parse::<usize>().ok();
            } else if name == "transfer-encoding" {
                bail!("a chunked response: the bench's upstream answers with a content-length");
            }
        }
        let end = head_end + length.unwrap_or(0);
        while self.buf.len() < end {
            self.fill()?;
        }
        self.buf.drain(..end);
        Ok(status)
    }

    fn fill(&mut self) -> Result<()> {
        let mut chunk = [0u8; 4096];
        let n = self.stream.read(&mut chunk).context("reading a response")?;
        if n == 0 {
            bail!("the connection closed mid-response");
        }
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(())
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
