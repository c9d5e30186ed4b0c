//! A fault-injection TCP proxy on loopback, for testing the client on flaky networks: put it
//! between the client and a real server, then add latency, throttle, stall, reset or refuse
//! while traffic flows.
//!
//! Each accepted connection gets its own upstream connection and one task. In each direction
//! a reader stamps every chunk with its release time (arrival + latency) into a FIFO, and a
//! writer waits for that time, for the link to be un-stalled and for bandwidth, then writes.
//! Bytes are never dropped mid-stream (that would only corrupt TLS, which no real network
//! does): a dead link is modelled as a stall, and losing the connection as a reset.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tracing::debug;

/// Bytes held per direction of a connection (stalled, delayed or throttled) before the proxy
/// stops reading from that side, so that TCP backpressure reaches the sender instead of the
/// proxy's memory growing.
pub const MAX_HELD_PER_DIRECTION: usize = 4 << 20;

const CHUNK: usize = 16 << 10;

/// What the proxy has seen so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProxyCounts {
    /// Connections being forwarded now.
    pub live: usize,
    /// Connections accepted and forwarded (refused ones are not counted here).
    pub accepted: u64,
    /// Connections accepted and reset at once because the proxy was refusing.
    pub refused: u64,
    /// Calls of `reset_all`, by the test or by chaos.
    pub resets: u64,
    /// Connections torn down by those resets.
    pub reset_connections: u64,
}

/// A handle on a running proxy; clones share it. It stops when the last clone is dropped or
/// on [`Proxy::shutdown`].
#[derive(Clone)]
pub struct Proxy {
    owner: Arc<Owner>,
}

/// Owned by the handles only, never by the tasks, so that dropping the last handle is what
/// tells the tasks to end.
struct Owner {
    shared: Arc<Shared>,
}

impl Drop for Owner {
    fn drop(&mut self) {
        self.shared.shutdown.send_replace(true);
    }
}

struct Shared {
    addr: SocketAddr,
    upstream: SocketAddr,
    latency_nanos: AtomicU64,
    /// Zero means unlimited.
    bandwidth: AtomicU64,
    stalled: watch::Sender<bool>,
    refusing: AtomicBool,
    /// Bumped by `reset_all`; every connection alive at that moment watches it.
    reset_gen: watch::Sender<u64>,
    shutdown: watch::Sender<bool>,
    counts: watch::Sender<ProxyCounts>,
    held: Arc<AtomicUsize>,
}

impl Shared {
    fn latency(&self) -> Duration {
        Duration::from_nanos(self.latency_nanos.load(Ordering::Relaxed))
    }

    fn reset_all(&self) {
        self.counts.send_modify(|c| c.resets += 1);
        self.reset_gen.send_modify(|g| *g = g.wrapping_add(1));
    }

    fn set_stalled(&self, on: bool) {
        self.stalled.send_replace(on);
    }
}

impl Proxy {
    /// Listens on 127.0.0.1:0 and forwards every accepted connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let shared = Arc::new(Shared {
            addr: listener.local_addr()?,
            upstream,
            latency_nanos: AtomicU64::new(0),
            bandwidth: AtomicU64::new(0),
            stalled: watch::Sender::new(false),
            refusing: AtomicBool::new(false),
            reset_gen: watch::Sender::new(0),
            shutdown: watch::Sender::new(false),
            counts: watch::Sender::new(ProxyCounts::default()),
            held: Arc::new(AtomicUsize::new(0)),
        });
        tokio::spawn(accept_loop(shared.clone(), listener));
        Ok(Proxy {
            owner: Arc::new(Owner { shared }),
        })
    }

    fn shared(&self) -> &Arc<Shared> {
        &self.owner.shared
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.shared().addr
    }

    pub fn port(&self) -> u16 {
        self.shared().addr.port()
    }

    pub fn upstream(&self) -> SocketAddr {
        self.shared().upstream
    }

    /// One-way delay added to every chunk in each direction, so a round trip grows by twice
    /// this. Applies to live connections from the next chunk read; order within a direction
    /// is kept even when the latency is lowered.
    pub fn set_latency(&self, one_way: Duration) {
        let nanos = u64::try_from(one_way.as_nanos()).unwrap_or(u64::MAX);
        self.shared().latency_nanos.store(nanos, Ordering::Relaxed);
    }

    /// Bytes per second per direction of each connection; `None` is unlimited.
    pub fn set_bandwidth(&self, bytes_per_sec: Option<u64>) {
        let bps = bytes_per_sec.map_or(0, |b| b.max(1));
        self.shared().bandwidth.store(bps, Ordering::Relaxed);
    }

    /// While on, no byte passes in either direction and connections stay open, like a dead
    /// mobile link; bytes read meanwhile are held (up to [`MAX_HELD_PER_DIRECTION`], then
    /// the proxy stops reading) and released in order when it is turned off, unless the
    /// connection was reset meanwhile. New connections are still accepted and held too.
    pub fn set_stalled(&self, on: bool) {
        self.shared().set_stalled(on);
    }

    pub fn is_stalled(&self) -> bool {
        *self.shared().stalled.borrow()
    }

    /// Resets every live connection now: both the client and the upstream server see a
    /// connection reset (RST, not FIN), and bytes still held are lost. The connections'
    /// tasks tear down just after this returns, so wait for `live == 0` with
    /// [`Proxy::wait_counts`] rather than reading [`Proxy::connections`] at once.
    pub fn reset_all(&self) {
        self.shared().reset_all();
    }

    /// While on, new connections are accepted and reset at once, so a client's connect may
    /// succeed but its first read fails.
    pub fn set_refusing(&self, on: bool) {
        self.shared().refusing.store(on, Ordering::Relaxed);
    }

    /// Connections being forwarded now.
    pub fn connections(&self) -> usize {
        self.counts().live
    }

    /// Connections accepted and forwarded so far.
    pub fn accepted(&self) -> u64 {
        self.counts().accepted
    }

    pub fn counts(&self) -> ProxyCounts {
        *self.shared().counts.borrow()
    }

    /// Bytes read but not yet written, over all connections and directions.
    pub fn held_bytes(&self) -> usize {
        self.shared().held.load(Ordering::Relaxed)
    }

    /// Waits until the counts satisfy `pred` and returns them. It has no timeout of its
    /// own: wrap it in one.
    pub async fn wait_counts<F: FnMut(&ProxyCounts) -> bool>(&self, mut pred: F) -> ProxyCounts {
        let mut rx = self.shared().counts.subscribe();
        let result = rx.wait_for(|c| pred(c)).await.map(|c| *c);
        // The sender lives as long as `self`, so the wait cannot fail; this is only a
        // fallback that keeps the function total.
        result.unwrap_or_else(|_| self.counts())
    }

    /// Stops accepting and resets every connection; also what dropping the last handle does.
    pub fn shutdown(&self) {
        self.shared().shutdown.send_replace(true);
    }

    /// Starts a background chaos task for soak tests; see [`ChaosConfig`]. Must be called
    /// within a tokio runtime. Do not also stall the proxy by hand while it runs: chaos
    /// releases the stalls it makes. The handle does not keep the proxy running; chaos ends
    /// with it.
    pub fn chaos(&self, cfg: ChaosConfig) -> ChaosHandle {
        let state = Arc::new(Mutex::new(ChaosState::default()));
        let task = tokio::spawn(chaos_loop(self.shared().clone(), cfg, state.clone()));
        ChaosHandle {
            shared: self.shared().clone(),
            state,
            task,
        }
    }
}

async fn accept_loop(shared: Arc<Shared>, listener: TcpListener) {
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = shutdown.wait_for(|s| *s) => break,
        };
        let (client, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                debug!("proxy {}: accept failed: {e}", shared.addr);
                // Errors such as running out of descriptors repeat at once; pausing keeps
                // this from spinning.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        if shared.refusing.load(Ordering::Relaxed) {
            debug!("proxy {}: refusing {peer}", shared.addr);
            shared.counts.send_modify(|c| c.refused += 1);
            rst(&client);
            continue;
        }
        shared.counts.send_modify(|c| {
            c.accepted += 1;
            c.live += 1;
        });
        // Subscribed here rather than in the task so that a reset_all after this accept
        // returned always reaches this connection.
        let reset = shared.reset_gen.subscribe();
        let live = LiveGuard(shared.clone());
        tokio::spawn(connection(shared.clone(), client, peer, reset, live));
    }
    debug!("proxy {}: stopped accepting", shared.addr);
}

/// Counts a connection as live until its task ends, however it ends (even if the runtime
/// drops the task).
struct LiveGuard(Arc<Shared>);

impl Drop for LiveGuard {
    fn drop(&mut self) {
        self.0
            .counts
            .send_modify(|c| c.live = c.live.saturating_sub(1));
    }
}

/// Makes the peer see a reset instead of an orderly close when the socket is dropped.
fn rst(s: &TcpStream) {
    if let Err(e) = s.set_zero_linger() {
        debug!("proxy: SO_LINGER: {e}");
    }
}

enum End {
    Closed,
    Failed,
    Reset,
}

async fn connection(
    shared: Arc<Shared>,
    mut client: TcpStream,
    peer: SocketAddr,
    mut reset: watch::Receiver<u64>,
    _live: LiveGuard,
) {
    let mut shutdown = shared.shutdown.subscribe();
    let connected = tokio::select! {
        r = TcpStream::connect(shared.upstream) => Some(r),
        _ = reset.changed() => None,
        _ = shutdown.wait_for(|s| *s) => None,
    };
    let mut upstream = match connected {
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            debug!("proxy {}: {peer}: upstream connect: {e}", shared.addr);
            rst(&client);
            return;
        }
        None => {
            rst(&client);
            return;
        }
    };
    // Nagle would add delays of its own to small writes, which are the proxy's to decide.
    let _ = client.set_nodelay(true);
    let _ = upstream.set_nodelay(true);

    let end = {
        let (cr, cw) = client.split();
        let (ur, uw) = upstream.split();
        let both =
            async { tokio::try_join!(pipe(&shared, cr, uw), pipe(&shared, ur, cw)).map(|_| ()) };
        tokio::select! {
            r = both => match r {
                Ok(()) => End::Closed,
                Err(e) => {
                    debug!("proxy {}: {peer}: {e}", shared.addr);
                    End::Failed
                }
            },
            _ = reset.changed() => End::Reset,
            _ = shutdown.wait_for(|s| *s) => End::Failed,
        }
    };
    match end {
        End::Closed => debug!("proxy {}: {peer}: closed", shared.addr),
        End::Failed | End::Reset => {
            // One side failing is passed on as a reset of the other, as a middlebox that
            // lost the connection would.
            rst(&client);
            rst(&upstream);
            if matches!(end, End::Reset) {
                debug!("proxy {}: {peer}: reset", shared.addr);
                shared.counts.send_modify(|c| c.reset_connections += 1);
            }
        }
    }
}

/// Bytes read from one side and not yet written to the other.
struct Chunk {
    due: Instant,
    data: Vec<u8>,
    _room: OwnedSemaphorePermit,
    held: Arc<AtomicUsize>,
}

impl Drop for Chunk {
    fn drop(&mut self) {
        self.held.fetch_sub(self.data.len(), Ordering::Relaxed);
    }
}

/// Forwards one direction until EOF (passed on as a half-close) or an error.
async fn pipe<R, W>(shared: &Shared, mut from: R, mut to: W) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let room = Arc::new(Semaphore::new(MAX_HELD_PER_DIRECTION));
    // Unbounded in chunks but bounded in bytes by `room`.
    let (tx, mut rx) = mpsc::unbounded_channel::<Chunk>();

    let read = async move {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let n = from.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            let due = Instant::now() + shared.latency();
            let permits = u32::try_from(n).unwrap_or(u32::MAX);
            // Waiting for room here is what stops reading from this side when full.
            let Ok(room) = room.clone().acquire_many_owned(permits).await else {
                break;
            };
            shared.held.fetch_add(n, Ordering::Relaxed);
            let chunk = Chunk {
                due,
                data: buf[..n].to_vec(),
                _room: room,
                held: shared.held.clone(),
            };
            if tx.send(chunk).is_err() {
                break;
            }
        }
        drop(tx);
        Ok::<(), std::io::Error>(())
    };

    let write = async {
        let mut stalled = shared.stalled.subscribe();
        let mut pace = Instant::now();
        while let Some(chunk) = rx.recv().await {
            tokio::time::sleep_until(chunk.due).await;
            write_paced(shared, &mut to, &chunk.data, &mut stalled, &mut pace).await?;
        }
        // Held back like the bytes before it: on a dead link the FIN would not pass either.
        let _ = stalled.wait_for(|s| !*s).await;
        to.shutdown().await
    };

    tokio::try_join!(read, write).map(|_| ())
}

/// Writes `data` once the link is not stalled, at most at the configured bandwidth.
async fn write_paced<W: AsyncWrite + Unpin>(
    shared: &Shared,
    to: &mut W,
    data: &[u8],
    stalled: &mut watch::Receiver<bool>,
    pace: &mut Instant,
) -> std::io::Result<()> {
    let mut rest = data;
    while !rest.is_empty() {
        // `let _` drops the borrow at once: holding it across an await would block
        // set_stalled.
        let _ = stalled.wait_for(|s| !*s).await;
        let bps = shared.bandwidth.load(Ordering::Relaxed);
        if bps == 0 {
            return to.write_all(rest).await;
        }
        // Slices of about 50 ms of traffic keep a slow link smooth instead of bursting a
        // whole chunk and then going silent.
        let slice = usize::try_from(bps / 20)
            .unwrap_or(usize::MAX)
            .clamp(1, rest.len());
        // An idle link earns no credit for a later burst.
        let now = Instant::now();
        if *pace < now {
            *pace = now;
        }
        tokio::time::sleep_until(*pace).await;
        to.write_all(&rest[..slice]).await?;
        *pace += Duration::from_secs_f64(slice as f64 / bps as f64);
        rest = &rest[slice..];
    }
    Ok(())
}

/// A soak test's weather: every random interval in `[min_interval, max_interval]` chaos
/// either resets all connections (with `reset_probability`) or stalls the proxy for a random
/// time in `[stall_min, stall_max]`, after which it resets (again with `reset_probability`)
/// or just releases. The sequence of decisions and durations depends only on `seed`.
#[derive(Clone, Debug)]
pub struct ChaosConfig {
    pub seed: u64,
    pub min_interval: Duration,
    pub max_interval: Duration,
    pub stall_min: Duration,
    pub stall_max: Duration,
    pub reset_probability: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChaosEvent {
    Reset {
        after: Duration,
    },
    Stall {
        after: Duration,
        stall: Duration,
        then_reset: bool,
    },
}

/// What chaos did, for the test to report. A stall that ends in a reset counts in both.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChaosStats {
    pub resets: u64,
    pub stalls: u64,
    /// Every event begun, in order.
    pub events: Vec<ChaosEvent>,
}

#[derive(Default)]
struct ChaosState {
    stopped: bool,
    stalling: bool,
    stats: ChaosStats,
}

/// Runs chaos until stopped or dropped.
pub struct ChaosHandle {
    shared: Arc<Shared>,
    state: Arc<Mutex<ChaosState>>,
    task: tokio::task::JoinHandle<()>,
}

fn lock(state: &Mutex<ChaosState>) -> MutexGuard<'_, ChaosState> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

impl ChaosHandle {
    /// What chaos has done so far.
    pub fn stats(&self) -> ChaosStats {
        lock(&self.state).stats.clone()
    }

    /// Stops chaos; once this returns it does nothing more, and a stall of its own is
    /// released.
    pub fn stop(mut self) -> ChaosStats {
        self.halt()
    }

    fn halt(&mut self) -> ChaosStats {
        let mut st = lock(&self.state);
        // The task acts only under this lock after checking `stopped`, so nothing it does
        // can land after this.
        st.stopped = true;
        if st.stalling {
            st.stalling = false;
            self.shared.set_stalled(false);
        }
        self.task.abort();
        st.stats.clone()
    }
}

impl Drop for ChaosHandle {
    fn drop(&mut self) {
        self.halt();
    }
}

fn pick(rng: &mut StdRng, min: Duration, max: Duration) -> Duration {
    if max <= min {
        min
    } else {
        rng.gen_range(min..=max)
    }
}

/// Sleeps unless the proxy shuts down first; false if it did.
async fn nap(shutdown: &mut watch::Receiver<bool>, d: Duration) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(d) => true,
        _ = shutdown.wait_for(|s| *s) => false,
    }
}

async fn chaos_loop(shared: Arc<Shared>, cfg: ChaosConfig, state: Arc<Mutex<ChaosState>>) {
    let mut rng = StdRng::seed_from_u64(cfg.seed);
    let p = if cfg.reset_probability.is_nan() {
        0.0
    } else {
        cfg.reset_probability.clamp(0.0, 1.0)
    };
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        // Every random draw for an event comes before acting on it, so the sequence is the
        // seed's alone, whatever the timing.
        let after = pick(&mut rng, cfg.min_interval, cfg.max_interval);
        let event = if rng.gen_bool(p) {
            ChaosEvent::Reset { after }
        } else {
            ChaosEvent::Stall {
                after,
                stall: pick(&mut rng, cfg.stall_min, cfg.stall_max),
                then_reset: rng.gen_bool(p),
            }
        };
        if !nap(&mut shutdown, after).await {
            return;
        }
        {
            let mut st = lock(&state);
            if st.stopped {
                return;
            }
            st.stats.events.push(event);
            match event {
                ChaosEvent::Reset { .. } => {
                    debug!("chaos {}: reset", shared.addr);
                    shared.reset_all();
                    st.stats.resets += 1;
                }
                ChaosEvent::Stall { .. } => {
                    debug!("chaos {}: stall", shared.addr);
                    shared.set_stalled(true);
                    st.stalling = true;
                    st.stats.stalls += 1;
                }
            }
        }
        if let ChaosEvent::Stall {
            stall, then_reset, ..
        } = event
        {
            let alive = nap(&mut shutdown, stall).await;
            let mut st = lock(&state);
            if st.stopped {
                return;
            }
            if then_reset && alive {
                debug!("chaos {}: reset after stall", shared.addr);
                shared.reset_all();
                st.stats.resets += 1;
            }
            shared.set_stalled(false);
            st.stalling = false;
            if !alive {
                return;
            }
        }
    }
}
