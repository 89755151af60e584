//! The floor under the policy-server's one-connection latency in `cargo xtask bench`: a
//! minimal HTTPS responder (blocking rustls, one thread per connection, the same small answer
//! to every request, no async runtime, no router, no parsing of the body). What wrk measures
//! against it is what the load generator, the loopback and TLS cost on this machine; what the
//! policy-server takes beyond it is the server's own overhead.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use rustls::{ServerConfig, ServerConnection, StreamOwned};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// An AdmissionReview answer of the size the no-op endpoint gives.
const BODY: &str = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"demo-bench","allowed":true}}"#;

/// A running responder; its threads end with the process.
#[derive(Debug)]
pub struct TlsFloor {
    pub port: u16,
}

impl TlsFloor {
    /// Serves HTTPS on a free loopback port with `dir/tls.{crt,key}`.
    pub fn start(dir: &Path) -> Result<TlsFloor> {
        let certs = CertificateDer::pem_file_iter(dir.join("tls.crt"))
            .context("reading tls.crt")?
            .collect::<Result<Vec<_>, _>>()
            .context("parsing tls.crt")?;
        let key = PrivateKeyDer::from_pem_file(dir.join("tls.key")).context("reading tls.key")?;
        let config = Arc::new(
            ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_no_client_auth()
                .with_single_cert(certs, key)?,
        );
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        std::thread::Builder::new()
            .name("tls-floor".into())
            .spawn(move || {
                for stream in listener.incoming().flatten() {
                    let config = config.clone();
                    // A connection that breaks off only ends its own thread.
                    std::thread::spawn(move || serve(stream, config));
                }
            })?;
        Ok(TlsFloor { port })
    }
}

fn serve(stream: TcpStream, config: Arc<ServerConfig>) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let connection = ServerConnection::new(config).map_err(std::io::Error::other)?;
    let mut tls = StreamOwned::new(connection, stream);
    let answer = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{BODY}",
        BODY.len()
    );
    let mut pending = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let read = tls.read(&mut chunk)?;
        if read == 0 {
            return Ok(());
        }
        pending.extend_from_slice(&chunk[..read]);
        while let Some(length) = request_length(&pending) {
            pending.drain(..length);
            tls.write_all(answer.as_bytes())?;
        }
    }
}

/// The length of the first complete HTTP/1.1 request in `bytes` (head and a body of
/// `content-length` bytes), if it has all arrived.
fn request_length(bytes: &[u8]) -> Option<usize> {
    let head_end = bytes.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&bytes[..head_end]).ok()?;
    let body = head
        .lines()
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, value)| value.trim().parse::<usize>().ok())
        .unwrap_or(0);
    let total = head_end + body;
    (bytes.len() >= total).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_end_after_their_body() {
        let request = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabcPOST";
        assert_eq!(request_length(request), Some(request.len() - 4));
        assert_eq!(request_length(&request[..request.len() - 6]), None);
        assert_eq!(request_length(b"GET / HTTP/1.1\r\n\r\n"), Some(18));
        assert_eq!(request_length(b"GET / HTTP/1.1\r\n"), None);
    }
}
