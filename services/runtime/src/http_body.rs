//! Reading an HTTP response body with a size cap, for every HTTP client in both binaries
//! (the producer's Yahoo client, the consumer's InfluxDB client).
//!
//! `reqwest`'s `bytes()` and `text()` read whatever the server sends: a broken or hostile
//! server (or a proxy in between) answering with 1.5 GB took the producer to 2.36 GB of
//! memory. [`read_capped`] refuses a declared `Content-Length` over the cap before reading
//! anything, and stops reading (dropping the connection) as soon as the body, after any
//! decompression, passes the cap, so a gzip bomb is bounded too.

use thiserror::Error;

/// Why a body could not be read.
#[derive(Debug, Error)]
pub enum BodyError {
    #[error("the response body is larger than the {cap}-byte limit{}", declared.map(|d| format!(" (Content-Length {d})")).unwrap_or_default())]
    TooLarge { cap: u64, declared: Option<u64> },
    #[error("{0}")]
    Transport(reqwest::Error),
}

/// Reads `resp`'s body, at most `cap` bytes of it (see the module docs).
pub async fn read_capped(mut resp: reqwest::Response, cap: u64) -> Result<Vec<u8>, BodyError> {
    let declared = resp.content_length();
    if declared.is_some_and(|n| n > cap) {
        return Err(BodyError::TooLarge { cap, declared });
    }
    let mut body = Vec::with_capacity(declared.unwrap_or(0).min(cap) as usize);
    while let Some(chunk) = resp.chunk().await.map_err(BodyError::Transport)? {
        if (body.len() + chunk.len()) as u64 > cap {
            return Err(BodyError::TooLarge {
                cap,
                declared: None,
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// [`read_capped`] as text (invalid UTF-8 replaced), for error messages.
pub async fn text_capped(resp: reqwest::Response, cap: u64) -> Result<String, BodyError> {
    read_capped(resp, cap)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A one-shot HTTP server answering `head` then `body_len` bytes of `x`; returns its
    /// URL and a handle that resolves to how many body bytes it managed to write.
    async fn server(head: String, body_len: usize) -> (String, tokio::task::JoinHandle<usize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf).await;
            conn.write_all(head.as_bytes()).await.unwrap();
            let chunk = vec![b'x'; 64 * 1024];
            let mut sent = 0;
            while sent < body_len {
                let n = chunk.len().min(body_len - sent);
                if conn.write_all(&chunk[..n]).await.is_err() {
                    break;
                }
                sent += n;
            }
            sent
        });
        (url, task)
    }

    #[tokio::test]
    async fn bodies_over_the_cap_are_refused_without_reading_them_whole() {
        let client = reqwest::Client::new();
        // Declared too large: refused from the header.
        let (url, _task) = server(
            "HTTP/1.1 200 OK\r\nContent-Length: 100000000\r\n\r\n".into(),
            0,
        )
        .await;
        let resp = client.get(&url).send().await.unwrap();
        let e = read_capped(resp, 1000).await.unwrap_err();
        assert_eq!(
            e.to_string(),
            "the response body is larger than the 1000-byte limit (Content-Length 100000000)"
        );
        // Undeclared (read to close) and too large: reading stops at the cap.
        let len = 64 << 20;
        let (url, task) = server("HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n".into(), len).await;
        let resp = client.get(&url).send().await.unwrap();
        let e = read_capped(resp, 1 << 20).await.unwrap_err();
        assert!(
            matches!(e, BodyError::TooLarge { declared: None, .. }),
            "{e}"
        );
        let sent = task.await.unwrap();
        assert!(
            sent < len / 2,
            "the client stopped reading: {sent} of {len} bytes sent"
        );
        // Within the cap: read whole.
        let (url, _task) = server("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n".into(), 5).await;
        let resp = client.get(&url).send().await.unwrap();
        assert_eq!(text_capped(resp, 5).await.unwrap(), "xxxxx");
    }
}
