//! A TCP proxy on loopback that can refuse, reset, blackhole and delay traffic on command.

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyMode {
    /// Forward both ways (after the configured latency).
    Pass,
    /// Close the listening port: new connections are refused; open ones keep working.
    Refuse,
    /// Accept connections but forward no byte, either way, on new or open connections.
    Blackhole,
}

struct Shared {
    mode: watch::Sender<ProxyMode>,
    /// Bumped by `reset_all`; every connection opened before it is reset.
    resets: watch::Sender<u64>,
    latency_us: AtomicU64,
    open: AtomicUsize,
    accepted: AtomicUsize,
}

/// A fault-injection proxy: listens on `127.0.0.1`, forwards to a loopback target, and on
/// command passes, refuses, resets or blackholes traffic, or adds latency. Put it between a
/// pool and its server in tests:
///
/// ```no_run
/// # async fn f() -> std::io::Result<()> {
/// use poolvisor::testing::FaultProxy;
/// let proxy = FaultProxy::start("127.0.0.1:5432".parse().unwrap()).await?;
/// let url = format!("postgres://root@{}/test", proxy.addr());
/// // ... build a pool on `url`, then:
/// proxy.reset_all();  // every open connection gets a RST
/// proxy.refuse();     // and new ones are refused
/// proxy.pass();       // back to normal
/// # Ok(()) }
/// ```
///
/// Only loopback targets are accepted: this is a test tool, not a router.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
        // Connection tasks end with the reset.
        self.shared.resets.send_modify(|n| *n += 1);
    }
}

impl FaultProxy {
    /// Starts a proxy on an ephemeral loopback port, forwarding to `target`.
    pub async fn start(target: SocketAddr) -> io::Result<Self> {
        Self::start_on(0, target).await
    }

    /// Starts a proxy on `127.0.0.1:port` (0: ephemeral), forwarding to `target`.
    pub async fn start_on(port: u16, target: SocketAddr) -> io::Result<Self> {
        if !target.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("FaultProxy forwards to loopback only, not {target}"),
            ));
        }
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            mode: watch::channel(ProxyMode::Pass).0,
            resets: watch::channel(0).0,
            latency_us: AtomicU64::new(0),
            open: AtomicUsize::new(0),
            accepted: AtomicUsize::new(0),
        });
        let task = tokio::spawn(listen(listener, addr, target, shared.clone()));
        Ok(FaultProxy { addr, shared, task })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The current mode.
    pub fn mode(&self) -> ProxyMode {
        *self.shared.mode.borrow()
    }

    /// Forward traffic normally.
    pub fn pass(&self) {
        self.shared.mode.send_replace(ProxyMode::Pass);
    }

    /// Refuse new connections (the port closes); open ones keep working.
    pub fn refuse(&self) {
        self.shared.mode.send_replace(ProxyMode::Refuse);
    }

    /// Accept connections but forward nothing, on open and new connections alike.
    pub fn blackhole(&self) {
        self.shared.mode.send_replace(ProxyMode::Blackhole);
    }

    /// Resets (RST) every connection open now, both sides.
    pub fn reset_all(&self) {
        self.shared.resets.send_modify(|n| *n += 1);
    }

    /// Delays every chunk of data forwarded, either way.
    pub fn set_latency(&self, latency: Duration) {
        self.shared
            .latency_us
            .store(latency.as_micros() as u64, Ordering::Release);
    }

    /// Connections open through the proxy now.
    pub fn open_connections(&self) -> usize {
        self.shared.open.load(Ordering::Acquire)
    }

    /// Connections accepted since the start.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::Acquire)
    }
}

async fn listen(first: TcpListener, addr: SocketAddr, target: SocketAddr, shared: Arc<Shared>) {
    let mut mode = shared.mode.subscribe();
    let mut listener = Some(first);
    loop {
        let refusing = *mode.borrow_and_update() == ProxyMode::Refuse;
        if refusing {
            listener = None; // the port closes
            if mode.changed().await.is_err() {
                return;
            }
            continue;
        }
        let l = match listener.take() {
            Some(l) => l,
            None => match TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            },
        };
        tokio::select! {
            accepted = l.accept() => {
                if let Ok((inbound, _)) = accepted {
                    shared.accepted.fetch_add(1, Ordering::AcqRel);
                    tokio::spawn(connection(inbound, target, shared.clone()));
                }
                listener = Some(l);
            }
            changed = mode.changed() => {
                if changed.is_err() {
                    return;
                }
                listener = Some(l);
            }
        }
    }
}

async fn connection(inbound: TcpStream, target: SocketAddr, shared: Arc<Shared>) {
    let mut resets = shared.resets.subscribe();
    resets.borrow_and_update();
    let Ok(outbound) = TcpStream::connect(target).await else {
        let _ = inbound.set_zero_linger();
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = outbound.set_nodelay(true);
    shared.open.fetch_add(1, Ordering::AcqRel);
    let (mut in_read, mut in_write) = inbound.into_split();
    let (mut out_read, mut out_write) = outbound.into_split();
    let reset = {
        let up = pump(&mut in_read, &mut out_write, &shared);
        let down = pump(&mut out_read, &mut in_write, &shared);
        tokio::select! {
            _ = async { tokio::join!(up, down) } => false,
            _ = resets.changed() => true,
        }
    };
    if reset {
        // Zero linger: closing sends RST, to the client and to the server.
        let _ = in_read.as_ref().set_zero_linger();
        let _ = out_read.as_ref().set_zero_linger();
    }
    drop((in_read, in_write, out_read, out_write));
    shared.open.fetch_sub(1, Ordering::AcqRel);
}

/// Copies one direction, honouring the mode and the latency.
async fn pump(
    from: &mut OwnedReadHalf,
    to: &mut OwnedWriteHalf,
    shared: &Shared,
) -> io::Result<()> {
    let mut mode = shared.mode.subscribe();
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        while *mode.borrow_and_update() == ProxyMode::Blackhole {
            if mode.changed().await.is_err() {
                return Ok(());
            }
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => read?,
            _ = mode.changed() => continue,
        };
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        let latency = shared.latency_us.load(Ordering::Acquire);
        if latency > 0 {
            tokio::time::sleep(Duration::from_micros(latency)).await;
        }
        // Bytes read just as a blackhole began are held until traffic flows again.
        while *mode.borrow_and_update() == ProxyMode::Blackhole {
            if mode.changed().await.is_err() {
                return Ok(());
            }
        }
        to.write_all(&buf[..n]).await?;
    }
}
