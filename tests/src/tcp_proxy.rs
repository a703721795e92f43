//! A TCP proxy in front of a real service that can cut its connections and
//! swallow the next ones: a broker that went away and, when its peers came
//! back, accepted their connections but never answered a handshake.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct TcpProxy {
    addr: SocketAddr,
    state: Arc<ProxyState>,
    accept: JoinHandle<()>,
}

struct ProxyState {
    upstream: SocketAddr,
    /// Bumped by `cut`: every session older than it ends.
    generation: watch::Sender<u64>,
    /// How many of the next connections are accepted and never served.
    swallow_next: AtomicUsize,
    /// Swallowed connections, held open (and unread) until the proxy drops.
    swallowed: Mutex<Vec<TcpStream>>,
}

impl TcpProxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<TcpProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(ProxyState {
            upstream,
            generation: watch::channel(0).0,
            swallow_next: AtomicUsize::new(0),
            swallowed: Mutex::new(Vec::new()),
        });
        let accept = tokio::spawn(accept_loop(listener, state.clone()));
        Ok(TcpProxy {
            addr,
            state,
            accept,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Ends every forwarded connection; the next `swallow` connections are
    /// accepted and then left silent, the ones after are forwarded again.
    pub fn cut(&self, swallow: usize) {
        self.state.swallow_next.store(swallow, Ordering::SeqCst);
        self.state.generation.send_modify(|g| *g += 1);
    }

    /// How many connections were accepted and never served.
    pub fn swallowed(&self) -> usize {
        self.state
            .swallowed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }
}

impl Drop for TcpProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.state.generation.send_modify(|g| *g += 1);
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<ProxyState>) {
    while let Ok((inbound, _)) = listener.accept().await {
        let swallow = state
            .swallow_next
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if swallow {
            state
                .swallowed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(inbound);
            continue;
        }
        tokio::spawn(forward(inbound, state.clone()));
    }
}

/// Copies both ways until either side closes or the proxy cuts.
async fn forward(mut inbound: TcpStream, state: Arc<ProxyState>) {
    let mut cut = state.generation.subscribe();
    let Ok(mut outbound) = TcpStream::connect(state.upstream).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = cut.changed() => {}
    }
}
