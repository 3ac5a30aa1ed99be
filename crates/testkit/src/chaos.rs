//! A TCP proxy that puts faults between a test and a real dependency (Redis,
//! PostgreSQL, an HTTP peer): cut the link, slow it down, or reset live
//! connections, then restore it. Point the client at [`ChaosProxy::addr`].
//!
//! Only tokio and std, so a test crate can include this file by `#[path]`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// Bounds the proxy's own connect to the upstream.
const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

struct Shared {
    upstream: SocketAddr,
    cut: AtomicBool,
    delay_micros: AtomicU64,
    live: AtomicUsize,
    /// Bumped to make every live connection drop at once.
    kill: watch::Sender<u64>,
}

impl Shared {
    fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_micros.load(Ordering::SeqCst))
    }

    fn kill_all(&self) {
        self.kill.send_modify(|n| *n += 1);
    }
}

/// A fault-injecting proxy listening on 127.0.0.1 (random port). Dropping it
/// stops it and drops every connection.
pub struct ChaosProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for ChaosProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChaosProxy")
            .field("addr", &self.addr)
            .field("upstream", &self.shared.upstream)
            .field("cut", &self.shared.cut.load(Ordering::SeqCst))
            .field("delay", &self.shared.delay())
            .field("connections", &self.connections())
            .finish()
    }
}

impl ChaosProxy {
    /// Starts proxying to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<ChaosProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (kill, _) = watch::channel(0);
        let shared = Arc::new(Shared {
            upstream,
            cut: AtomicBool::new(false),
            delay_micros: AtomicU64::new(0),
            live: AtomicUsize::new(0),
            kill,
        });
        let accept = tokio::spawn(accept_loop(listener, shared.clone()));
        Ok(ChaosProxy {
            addr,
            shared,
            accept,
        })
    }

    /// Where clients should connect instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Simulates the dependency going away: live connections are reset and
    /// new ones are reset as soon as they are accepted.
    pub fn cut(&self) {
        self.shared.cut.store(true, Ordering::SeqCst);
        self.shared.kill_all();
        tracing::info!(proxy = %self.addr, "chaos: link cut");
    }

    /// Back to a healthy link: accepts connections again, no added delay.
    pub fn restore(&self) {
        self.shared.cut.store(false, Ordering::SeqCst);
        self.shared.delay_micros.store(0, Ordering::SeqCst);
        tracing::info!(proxy = %self.addr, "chaos: link restored");
    }

    /// Adds `latency` before forwarding each chunk, in both directions
    /// (a request/response round trip pays it twice). Zero removes it.
    pub fn delay(&self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.shared.delay_micros.store(micros, Ordering::SeqCst);
        tracing::info!(proxy = %self.addr, ?latency, "chaos: latency set");
    }

    /// Resets every live connection once; new connections go through.
    pub fn reset_mid_stream(&self) {
        self.shared.kill_all();
        tracing::info!(proxy = %self.addr, "chaos: live connections reset");
    }

    /// Connections currently proxied.
    pub fn connections(&self) -> usize {
        self.shared.live.load(Ordering::SeqCst)
    }
}

impl Drop for ChaosProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.shared.kill_all();
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let client = match listener.accept().await {
            Ok((client, _)) => client,
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "chaos: accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        if shared.cut.load(Ordering::SeqCst) {
            reset(client);
            continue;
        }
        tokio::spawn(proxy_connection(client, shared.clone()));
    }
}

/// Closes with RST rather than FIN, as a crashed peer or a firewall would.
fn reset(stream: TcpStream) {
    let _ = stream.set_zero_linger();
    drop(stream);
}

/// Decrements the live count however the connection ends.
struct LiveGuard(Arc<Shared>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0.live.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn proxy_connection(mut client: TcpStream, shared: Arc<Shared>) {
    // Subscribe before anything else so a cut during the upstream connect
    // is not missed.
    let mut kill = shared.kill.subscribe();
    let mut upstream = match tokio::time::timeout(
        UPSTREAM_CONNECT_TIMEOUT,
        TcpStream::connect(shared.upstream),
    )
    .await
    {
        Ok(Ok(s)) => s,
        _ => {
            reset(client);
            return;
        }
    };
    if shared.cut.load(Ordering::SeqCst) {
        reset(client);
        reset(upstream);
        return;
    }
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);
    shared.live.fetch_add(1, Ordering::SeqCst);
    let _live = LiveGuard(shared.clone());

    let killed = {
        let (mut cr, mut cw) = client.split();
        let (mut ur, mut uw) = upstream.split();
        let pump = async {
            tokio::join!(
                pipe(&mut cr, &mut uw, &shared),
                pipe(&mut ur, &mut cw, &shared)
            )
        };
        tokio::select! {
            // A cut that is already signalled wins over data that arrived
            // with it.
            biased;
            _ = kill.changed() => true,
            _ = pump => false,
        }
    };
    if killed {
        reset(client);
        reset(upstream);
    }
}

/// Copies one direction chunk by chunk, sleeping the configured delay before
/// each write; passes the end of stream on as a half-close.
async fn pipe<R, W>(from: &mut R, to: &mut W, shared: &Shared)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        // Read after `cut` returned: dropped, never forwarded, even when
        // this task has not seen the kill signal yet (the caller's next
        // request must fail, not race the signal). The connection is reset
        // by the kill branch.
        if shared.cut.load(Ordering::SeqCst) {
            return;
        }
        let delay = shared.delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
