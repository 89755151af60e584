//! The stdin of a WASI policy: the request first, then whatever the host answers to the
//! policy's `host.call`s. Kubewarden's WASI SDKs read stdin to its end, call the host, then
//! read stdin to its end again for the answer; so a read of an empty buffer is an end of
//! file, and a later append makes the stream readable again.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::{AsyncRead, ReadBuf};
use wasmtime_wasi::cli::{IsTerminal, StdinStream};
use wasmtime_wasi::p2::{InputStream, Pollable, StreamError, StreamResult};

#[derive(Debug, Clone, Default)]
pub(crate) struct GrowingStdin {
    buffer: Arc<Mutex<VecDeque<u8>>>,
}

impl GrowingStdin {
    pub(crate) fn new(initial: Vec<u8>) -> Self {
        GrowingStdin {
            buffer: Arc::new(Mutex::new(initial.into())),
        }
    }

    pub(crate) fn append(&self, bytes: &[u8]) {
        self.buffer
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(bytes);
    }

    fn take(&self, size: usize) -> Vec<u8> {
        let mut buffer = self.buffer.lock().unwrap_or_else(PoisonError::into_inner);
        let size = size.min(buffer.len());
        buffer.drain(..size).collect()
    }
}

impl IsTerminal for GrowingStdin {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdinStream for GrowingStdin {
    fn p2_stream(&self) -> Box<dyn InputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncRead + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl InputStream for GrowingStdin {
    fn read(&mut self, size: usize) -> StreamResult<Bytes> {
        let bytes = self.take(size);
        if bytes.is_empty() && size > 0 {
            return Err(StreamError::Closed);
        }
        Ok(Bytes::from(bytes))
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for GrowingStdin {
    async fn ready(&mut self) {}
}

impl AsyncRead for GrowingStdin {
    fn poll_read(
        self: Pin<&mut Self>,
        _context: &mut Context<'_>,
        buffer: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let bytes = self.take(buffer.remaining());
        buffer.put_slice(&bytes);
        Poll::Ready(Ok(()))
    }
}
