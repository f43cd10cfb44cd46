//! The fault-injecting loopback TCP proxy.

use std::collections::VecDeque;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio::time::Instant;

use super::HarnessError;
use crate::rt::lock;

/// How long the proxy waits for the upstream TCP connection.
const PROXY_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Read buffer of one proxy direction.
const PROXY_CHUNK: usize = 16 * 1024;
/// Chunks one proxy direction buffers (in `Delay` mode) before it stops reading.
const PROXY_MAX_PENDING: usize = 256;

/// Behaviour of a [`Proxy`]; switch with [`Proxy::set_mode`]. A switch applies
/// to existing connections too, within milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ProxyMode {
    /// Forward bytes both ways unchanged (the default).
    #[default]
    Pass,
    /// Keep connections open but forward nothing either way; new connections
    /// are accepted but get nothing forwarded either (the upstream connection
    /// is only opened once the mode allows traffic). Nothing is discarded:
    /// bytes wait in socket buffers and flow again after switching back, like
    /// a healed network partition.
    Blackhole,
    /// Close existing connections at once and close new ones right after
    /// accepting them; the proxy keeps listening.
    Refuse,
    /// Forward client-to-server bytes; read and silently discard
    /// server-to-client bytes.
    DropResponses,
    /// Forward both ways, each chunk delayed by the duration after it was
    /// read; order is preserved.
    Delay(Duration),
}

/// A loopback TCP proxy the test controls, placed between a client and one
/// etcd member (see the [module documentation](crate::testing)).
///
/// Listens on `127.0.0.1:<free port>` and opens one upstream connection to
/// the target per accepted client connection. Dropping the proxy aborts its
/// accept task and all connection tasks, which closes every socket.
#[derive(Debug)]
pub struct Proxy {
    addr: SocketAddr,
    shared: Arc<ProxyShared>,
    accept_task: AbortHandle,
}

#[derive(Debug)]
struct ProxyShared {
    target: SocketAddr,
    mode: watch::Sender<ProxyMode>,
    connections: Mutex<Vec<AbortHandle>>,
    to_server: AtomicU64,
    to_client: AtomicU64,
    accepted: AtomicUsize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    ToServer,
    ToClient,
}

impl Proxy {
    /// Starts a proxy listening on `127.0.0.1:0` (a free port) that forwards
    /// to `target`, in [`ProxyMode::Pass`].
    ///
    /// # Errors
    ///
    /// If the listening socket cannot be bound.
    ///
    /// # Panics
    ///
    /// If not called from within a Tokio runtime (tasks are spawned on it).
    pub async fn start(target: SocketAddr) -> Result<Proxy, HarnessError> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(|e| HarnessError::new(format!("proxy: cannot bind 127.0.0.1:0: {e}")))?;
        let addr = listener
            .local_addr()
            .map_err(|e| HarnessError::new(format!("proxy: cannot read local address: {e}")))?;
        let shared = Arc::new(ProxyShared {
            target,
            mode: watch::Sender::new(ProxyMode::Pass),
            connections: Mutex::new(Vec::new()),
            to_server: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
            accepted: AtomicUsize::new(0),
        });
        let accept_task = tokio::spawn(accept_loop(listener, Arc::clone(&shared))).abort_handle();
        Ok(Proxy {
            addr,
            shared,
            accept_task,
        })
    }

    /// The address clients connect to (`127.0.0.1:PORT`).
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The proxy as an etcd endpoint URL: `"http://127.0.0.1:PORT"`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The current mode.
    #[must_use]
    pub fn mode(&self) -> ProxyMode {
        *self.shared.mode.borrow()
    }

    /// Switches the mode; existing connections follow promptly.
    /// [`ProxyMode::Refuse`] also closes every current connection at once.
    pub fn set_mode(&self, mode: ProxyMode) {
        self.shared.mode.send_replace(mode);
        if mode == ProxyMode::Refuse {
            self.cut();
        }
    }

    /// Closes every current connection now (both the client and the upstream
    /// socket). New connections are handled per the current mode.
    pub fn cut(&self) {
        let handles = std::mem::take(&mut *lock(&self.shared.connections));
        for handle in handles {
            handle.abort();
        }
    }

    /// Total bytes forwarded so far: `(client -> server, server -> client)`.
    /// Bytes held back (blackhole, delay) or discarded (drop responses) are
    /// not counted.
    #[must_use]
    pub fn bytes_forwarded(&self) -> (u64, u64) {
        (
            self.shared.to_server.load(Ordering::SeqCst),
            self.shared.to_client.load(Ordering::SeqCst),
        )
    }

    /// Number of client connections accepted so far (including ones closed
    /// at once in [`ProxyMode::Refuse`]).
    #[must_use]
    pub fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept_task.abort();
        self.cut();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<ProxyShared>) {
    loop {
        let Ok((client, _)) = listener.accept().await else {
            // E.g. out of file descriptors: back off briefly, keep serving.
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        if *shared.mode.borrow() == ProxyMode::Refuse {
            shared.accepted.fetch_add(1, Ordering::SeqCst);
            drop(client);
            continue;
        }
        let _ = client.set_nodelay(true);
        let task = tokio::spawn(proxy_connection(client, Arc::clone(&shared)));
        {
            let mut connections = lock(&shared.connections);
            connections.retain(|handle| !handle.is_finished());
            connections.push(task.abort_handle());
        }
        // Counted once registered, so a test that saw the count can `cut()` it.
        shared.accepted.fetch_add(1, Ordering::SeqCst);
    }
}

async fn proxy_connection(client: TcpStream, shared: Arc<ProxyShared>) {
    let mut mode_rx = shared.mode.subscribe();
    // Connect upstream only once the mode lets traffic through.
    loop {
        let mode = *mode_rx.borrow_and_update();
        match mode {
            ProxyMode::Refuse => return,
            ProxyMode::Blackhole => {
                if mode_rx.changed().await.is_err() {
                    return;
                }
            }
            _ => break,
        }
    }
    let connect = tokio::time::timeout(PROXY_CONNECT_TIMEOUT, TcpStream::connect(shared.target));
    let Ok(Ok(server)) = connect.await else {
        return; // upstream down: close the client connection
    };
    let _ = server.set_nodelay(true);
    let (client_read, client_write) = client.into_split();
    let (server_read, server_write) = server.into_split();
    let _ = tokio::try_join!(
        pump(client_read, server_write, Direction::ToServer, &shared),
        pump(server_read, client_write, Direction::ToClient, &shared),
    );
    // Returning drops all four halves, closing both sockets.
}

/// Copies one direction of a connection according to the current mode.
/// `Ok` after a clean end of stream (forwarded as a half-close), `Err` when
/// the whole connection must be closed.
async fn pump(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    direction: Direction,
    shared: &ProxyShared,
) -> Result<(), ()> {
    let mut mode_rx = shared.mode.subscribe();
    let counter = match direction {
        Direction::ToServer => &shared.to_server,
        Direction::ToClient => &shared.to_client,
    };
    let mut buf = vec![0u8; PROXY_CHUNK];
    // Chunks read but not yet (fully) written, with the time they are due.
    let mut pending: VecDeque<(Instant, Vec<u8>)> = VecDeque::new();
    let mut written_of_front = 0usize;
    let mut eof = false;
    loop {
        let mode = *mode_rx.borrow_and_update();
        let discard = mode == ProxyMode::DropResponses && direction == Direction::ToClient;
        match mode {
            ProxyMode::Refuse => return Err(()),
            _ if discard => {
                pending.clear();
                written_of_front = 0;
            }
            _ => {}
        }
        if eof && pending.is_empty() {
            let _ = to.shutdown().await;
            return Ok(());
        }
        let flowing = mode != ProxyMode::Blackhole;
        let can_read = flowing && !eof && pending.len() < PROXY_MAX_PENDING;
        let front = if flowing { pending.front() } else { None };
        let can_write = front.is_some();
        tokio::select! {
            changed = mode_rx.changed() => {
                if changed.is_err() {
                    return Err(());
                }
            }
            read = from.read(&mut buf), if can_read => match read {
                Ok(0) => eof = true,
                Ok(_) if discard => {}
                Ok(n) => {
                    let due = match mode {
                        ProxyMode::Delay(delay) => Instant::now() + delay,
                        _ => Instant::now(),
                    };
                    pending.push_back((due, buf[..n].to_vec()));
                }
                Err(_) => return Err(()),
            },
            written = write_when_due(&mut to, front, written_of_front), if can_write => match written {
                Ok(0) | Err(_) => return Err(()),
                Ok(n) => {
                    counter.fetch_add(n as u64, Ordering::SeqCst);
                    written_of_front += n;
                    if pending.front().is_some_and(|(_, chunk)| written_of_front >= chunk.len()) {
                        pending.pop_front();
                        written_of_front = 0;
                    }
                }
            },
        }
    }
}

/// Waits until `front` is due, then writes (part of) its unwritten rest.
/// Cancel-safe: a cancelled call has written nothing.
async fn write_when_due(
    to: &mut OwnedWriteHalf,
    front: Option<&(Instant, Vec<u8>)>,
    offset: usize,
) -> io::Result<usize> {
    let Some((due, chunk)) = front else {
        return std::future::pending().await;
    };
    tokio::time::sleep_until(*due).await;
    to.write(&chunk[offset..]).await
}
