//! `udp` and `tcp`: syslog listeners. A datagram is one record (RFC 5426). A TCP stream
//! is split into records by its framing (RFC 6587): octet counting (`LEN SP MSG`) when a
//! frame starts with a digit, a newline after the message otherwise. The parsing of the
//! message itself (RFC 5424 or 3164) is the decoder's.
//!
//! Records wait in a bounded queue for the input's thread: when the decoder or the log
//! falls behind, a TCP sender waits and UDP datagrams wait in the socket's buffer (and
//! past it are dropped by the kernel, as UDP has it).

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError, sync_channel};
use std::thread::JoinHandle;
use std::time::Duration;

use super::{FileStatus, Record, Source};
use corral::now_ns;

/// Records waiting for the input's thread.
const QUEUE: usize = 4096;
/// How often a blocked socket looks at whether to stop.
const STOP_CHECK: Duration = Duration::from_millis(100);

pub(crate) struct Listener {
    records: Receiver<Record>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    cut: Arc<AtomicUsize>,
    /// A record taken while waiting, handed at the next read.
    next: Option<Record>,
    /// The address bound (the port chosen, for a configured port 0).
    local: SocketAddr,
}

impl Listener {
    /// The address it listens on.
    pub(crate) fn local(&self) -> SocketAddr {
        self.local
    }

    /// Listens for datagrams on `address`.
    pub(crate) fn udp(name: &str, address: SocketAddr, max_line: usize) -> Result<Listener, String> {
        let socket = UdpSocket::bind(address).map_err(|e| format!("cannot listen on udp {address}: {e}"))?;
        socket
            .set_read_timeout(Some(STOP_CHECK))
            .map_err(|e| e.to_string())?;
        let local = socket.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(plugin = name, "syslog input listening on udp {local}");
        let (send, records) = sync_channel(QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, cut) = (stop.clone(), cut.clone());
            std::thread::Builder::new()
                .name(format!("corral-udp-{name}"))
                .spawn(move || {
                    // A datagram is at most 64 KiB; longer than `max_line`, it is cut.
                    let mut buf = vec![0u8; 65_536];
                    while !stop.load(Ordering::SeqCst) {
                        let (n, peer) = match socket.recv_from(&mut buf) {
                            Ok(got) => got,
                            Err(e)
                                if matches!(
                                    e.kind(),
                                    std::io::ErrorKind::WouldBlock
                                        | std::io::ErrorKind::TimedOut
                                        | std::io::ErrorKind::Interrupted
                                ) =>
                            {
                                continue;
                            }
                            Err(e) => {
                                tracing::warn!("udp input: {e}");
                                continue;
                            }
                        };
                        let mut data = &buf[..n];
                        if data.len() > max_line {
                            cut.fetch_add(1, Ordering::Relaxed);
                            data = &data[..max_line];
                        }
                        let data = trim_end(data).to_vec();
                        if !send_record(&send, &stop, data, peer) {
                            break;
                        }
                    }
                })
                .map_err(|e| e.to_string())?
        };
        Ok(Listener {
            records,
            stop,
            threads: vec![thread],
            cut,
            next: None,
            local,
        })
    }

    /// Listens for TCP connections on `address`, at most `max_connections` at once.
    pub(crate) fn tcp(
        name: &str,
        address: SocketAddr,
        max_line: usize,
        max_connections: usize,
    ) -> Result<Listener, String> {
        let listener =
            TcpListener::bind(address).map_err(|e| format!("cannot listen on tcp {address}: {e}"))?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let local = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!(plugin = name, "syslog input listening on tcp {local}");
        let (send, records) = sync_channel(QUEUE);
        let stop = Arc::new(AtomicBool::new(false));
        let cut = Arc::new(AtomicUsize::new(0));
        let thread = {
            let (stop, cut, name) = (stop.clone(), cut.clone(), name.to_owned());
            std::thread::Builder::new()
                .name(format!("corral-tcp-{name}"))
                .spawn(move || {
                    let open = Arc::new(AtomicUsize::new(0));
                    let mut handles: Vec<JoinHandle<()>> = Vec::new();
                    while !stop.load(Ordering::SeqCst) {
                        handles.retain(|h| !h.is_finished());
                        if open.load(Ordering::SeqCst) >= max_connections {
                            std::thread::sleep(Duration::from_millis(20));
                            continue;
                        }
                        let (stream, peer) = match listener.accept() {
                            Ok(accepted) => accepted,
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                std::thread::sleep(Duration::from_millis(20));
                                continue;
                            }
                            Err(e) => {
                                tracing::warn!(plugin = %name, "tcp input: {e}");
                                std::thread::sleep(Duration::from_millis(20));
                                continue;
                            }
                        };
                        open.fetch_add(1, Ordering::SeqCst);
                        let (send, stop, cut, open) = (send.clone(), stop.clone(), cut.clone(), open.clone());
                        let spawned =
                            std::thread::Builder::new()
                                .name("corral-tcp-conn".into())
                                .spawn(move || {
                                    serve(stream, peer, max_line, &send, &stop, &cut);
                                    open.fetch_sub(1, Ordering::SeqCst);
                                });
                        match spawned {
                            Ok(handle) => handles.push(handle),
                            Err(e) => {
                                tracing::warn!(plugin = %name, "tcp input: cannot serve a connection: {e}")
                            }
                        }
                    }
                    for handle in handles {
                        let _ = handle.join();
                    }
                })
                .map_err(|e| e.to_string())?
        };
        Ok(Listener {
            records,
            stop,
            threads: vec![thread],
            cut,
            next: None,
            local,
        })
    }
}

/// Sends a record, waiting while the queue is full; false once stopping.
fn send_record(send: &SyncSender<Record>, stop: &AtomicBool, data: Vec<u8>, peer: SocketAddr) -> bool {
    let mut record = Record {
        data,
        path: Arc::from(""),
        offset: 0,
        peer: Arc::from(peer.to_string()),
        received_ns: now_ns(),
    };
    loop {
        match send.try_send(record) {
            Ok(()) => return true,
            Err(TrySendError::Full(back)) => {
                if stop.load(Ordering::SeqCst) {
                    return false;
                }
                record = back;
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(TrySendError::Disconnected(_)) => return false,
        }
    }
}

/// A syslog message without the line ending and trailing NULs senders add.
fn trim_end(data: &[u8]) -> &[u8] {
    let mut end = data.len();
    while end > 0 && matches!(data[end - 1], b'\n' | b'\r' | 0) {
        end -= 1;
    }
    &data[..end]
}

/// Splits one connection's stream into records until it closes.
fn serve(
    mut stream: TcpStream,
    peer: SocketAddr,
    max_line: usize,
    send: &SyncSender<Record>,
    stop: &AtomicBool,
    cut: &AtomicUsize,
) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(STOP_CHECK));
    let mut framer = Framer::new(max_line);
    let mut buf = vec![0u8; 64 << 10];
    let mut frames = Vec::new();
    while !stop.load(Ordering::SeqCst) {
        let n = match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock
                        | std::io::ErrorKind::TimedOut
                        | std::io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(_) => break,
        };
        framer.push(&buf[..n], &mut frames);
        cut.fetch_add(std::mem::take(&mut framer.cut), Ordering::Relaxed);
        for frame in frames.drain(..) {
            if !send_record(send, stop, frame, peer) {
                return;
            }
        }
    }
    // A last frame without its newline, at the end of the stream.
    if let Some(frame) = framer.finish() {
        send_record(send, stop, frame, peer);
    }
}

/// RFC 6587 framing: octet counting or non-transparent (newline) framing, decided frame
/// by frame by the first byte. A frame longer than `max_line` is cut to it; its rest is
/// read and dropped, never held.
pub(crate) struct Framer {
    max_line: usize,
    state: Frame,
    buf: Vec<u8>,
    /// The octet-counted frame being read is longer than `max_line`.
    overflowed: bool,
    pub(crate) cut: usize,
}

enum Frame {
    /// At the start of a frame.
    Start,
    /// Reading an octet count.
    Count(usize),
    /// Reading `left` more bytes of an octet-counted frame.
    Counted { left: usize },
    /// Reading a frame up to its newline.
    Line { cut: bool },
}

impl Framer {
    pub(crate) fn new(max_line: usize) -> Framer {
        Framer {
            max_line,
            state: Frame::Start,
            buf: Vec::new(),
            overflowed: false,
            cut: 0,
        }
    }

    fn keep(&mut self, bytes: &[u8]) -> bool {
        let room = self.max_line.saturating_sub(self.buf.len());
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        bytes.len() > room
    }

    /// Takes `bytes` of the stream; complete frames go to `out`.
    pub(crate) fn push(&mut self, mut bytes: &[u8], out: &mut Vec<Vec<u8>>) {
        while !bytes.is_empty() {
            match self.state {
                Frame::Start => match bytes[0] {
                    b'\n' | b'\r' | 0 => bytes = &bytes[1..],
                    b'0'..=b'9' => self.state = Frame::Count(0),
                    _ => self.state = Frame::Line { cut: false },
                },
                Frame::Count(n) => {
                    let b = bytes[0];
                    bytes = &bytes[1..];
                    match b {
                        b'0'..=b'9' if n < 100_000_000 => {
                            self.state = Frame::Count(n * 10 + usize::from(b - b'0'))
                        }
                        b' ' => self.state = Frame::Counted { left: n },
                        _ => {
                            // Not a count after all: a line starting with digits.
                            self.buf.extend_from_slice(n.to_string().as_bytes());
                            self.buf.push(b);
                            self.state = Frame::Line { cut: false };
                            if b == b'\n' {
                                self.buf.pop();
                                out.push(std::mem::take(&mut self.buf));
                                self.state = Frame::Start;
                            }
                        }
                    }
                }
                Frame::Counted { left } => {
                    let take = left.min(bytes.len());
                    if self.keep(&bytes[..take]) {
                        self.overflowed = true;
                    }
                    bytes = &bytes[take..];
                    let left = left - take;
                    if left == 0 {
                        let frame = std::mem::take(&mut self.buf);
                        if std::mem::take(&mut self.overflowed) {
                            self.cut += 1;
                        }
                        out.push(trim_end(&frame).to_vec());
                        self.state = Frame::Start;
                    } else {
                        self.state = Frame::Counted { left };
                    }
                }
                Frame::Line { cut } => match bytes.iter().position(|b| *b == b'\n') {
                    Some(end) => {
                        let cut = self.keep(&bytes[..end]) || cut;
                        bytes = &bytes[end + 1..];
                        if cut {
                            self.cut += 1;
                        }
                        let frame = std::mem::take(&mut self.buf);
                        out.push(trim_end(&frame).to_vec());
                        self.state = Frame::Start;
                    }
                    None => {
                        let cut = self.keep(bytes) || cut;
                        bytes = &[];
                        self.state = Frame::Line { cut };
                    }
                },
            }
        }
    }

    /// What is left at the end of the stream: a line without its newline.
    pub(crate) fn finish(&mut self) -> Option<Vec<u8>> {
        let frame = std::mem::take(&mut self.buf);
        match std::mem::replace(&mut self.state, Frame::Start) {
            Frame::Line { .. } if !frame.is_empty() => Some(trim_end(&frame).to_vec()),
            _ => None,
        }
    }
}

impl Source for Listener {
    fn read(&mut self, out: &mut Vec<Record>, max: usize, max_bytes: usize) -> bool {
        let mut bytes = 0;
        if let Some(record) = self.next.take() {
            bytes += record.data.len();
            out.push(record);
        }
        while out.len() < max && bytes < max_bytes {
            match self.records.try_recv() {
                Ok(record) => {
                    bytes += record.data.len();
                    out.push(record);
                }
                Err(_) => return false,
            }
        }
        true
    }

    fn delivered(&mut self) {}

    fn position(&self) -> Vec<u8> {
        Vec::new()
    }

    fn wait(&mut self, timeout: Duration) {
        if self.next.is_none() {
            match self.records.recv_timeout(timeout) {
                Ok(record) => self.next = Some(record),
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
            }
        }
    }

    fn files(&self) -> Vec<FileStatus> {
        Vec::new()
    }

    fn stop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }

    fn take_cut(&mut self) -> u64 {
        self.cut.swap(0, Ordering::Relaxed) as u64
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        Source::stop(self);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_octet_counted_or_newline_ended() {
        let mut framer = Framer::new(16);
        let mut out = Vec::new();
        framer.push(b"11 <13>1 hello\n<13>plain line\n5 ab", &mut out);
        framer.push(b"cd\n<13>a line too long\n20 <13>counted too long", &mut out);
        assert_eq!(
            out,
            [
                &b"<13>1 hello"[..],
                b"<13>plain line",
                b"abcd",
                b"<13>a line too l",
                b"<13>counted too ",
            ]
        );
        assert_eq!(framer.cut, 2, "two frames were longer than 16 bytes");
        framer.push(b"no newline", &mut out);
        assert_eq!(framer.finish().as_deref(), Some(&b"no newline"[..]));
    }
}
