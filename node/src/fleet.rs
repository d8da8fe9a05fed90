//! A fleet of edges that fetch each object from its origin once: which node owns a key, and
//! which peers are up.
//!
//! Membership is configuration (`[fleet]`: this node's URL, every peer's, a shared secret),
//! reloadable; there is no consensus protocol. Each key's owner is chosen by rendezvous hashing
//! (highest random weight, as Varnish's shard director and ATS parent selection do): every peer
//! scores `xxh3(peer URL, bucket, key)` and the highest score owns the key, so adding or removing
//! a peer moves only the keys it gains or loses, and every node computes the same owner without
//! talking to the others.
//!
//! On a miss, a node that does not own the key asks the owner instead of the origin (the fill's
//! "origin" is then the owner's data plane, `GET /{bucket}/{key}` with [`PEER_HEADER`]), so the
//! owner's coalescing makes N edges cost the origin one request per object. A peer that is down
//! (probed every `fleet.probe_interval_ms`, or failing: its breaker opens like an origin's) is
//! skipped for the next in hash order; when no peer before this node in the order answers, this
//! node asks the origin itself. A request that carries the fleet's secret in [`PEER_HEADER`]
//! came from a peer: it is never forwarded again (no loops), and it may read objects of
//! buckets that are not public (peers are trusted with the secret).

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use std::io::{Read, Write};

use crate::rules::OriginAddr;

/// The header a node sends with a request to a peer: the fleet's secret.
pub const PEER_HEADER: &str = "x-edgemirror-fleet";

/// `[fleet]`, validated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FleetConfig {
    /// This node's data-plane URL, as listed in `peers`.
    pub self_url: String,
    /// Every node of the fleet (this one included), by data-plane URL.
    pub peers: Vec<String>,
    /// Proves a request came from a peer.
    pub secret: String,
    pub probe_interval: Duration,
}

/// One member of the fleet.
#[derive(Debug)]
pub struct Peer {
    /// `scheme://host[:port]`, normalized (no trailing slash, no default port): what the owner's
    /// score is computed from, so `http://a:80/` and `http://a` are one peer.
    pub url: String,
    pub addr: OriginAddr,
    pub is_self: bool,
    /// Last probe's answer (this node: always up).
    up: AtomicBool,
}

impl Peer {
    pub fn is_up(&self) -> bool {
        self.is_self || self.up.load(Ordering::Relaxed)
    }
}

/// The fleet as configured now (replaced whole on reload).
#[derive(Debug, Default)]
pub struct Fleet {
    members: ArcSwap<Members>,
}

#[derive(Debug, Default)]
struct Members {
    peers: Vec<Arc<Peer>>,
    secret: String,
    probe_interval: Duration,
}

impl Fleet {
    pub fn new(config: Option<&FleetConfig>) -> Fleet {
        let fleet = Fleet::default();
        fleet.set(config);
        fleet
    }

    /// Applies a (reloaded) `[fleet]`; a peer that stays keeps its last probe's answer.
    pub fn set(&self, config: Option<&FleetConfig>) {
        let old = self.members.load();
        let Some(config) = config else {
            self.members.store(Arc::new(Members::default()));
            return;
        };
        let me = normalized(&config.self_url).ok();
        let peers = config
            .peers
            .iter()
            .filter_map(|url| {
                let addr = peer_addr(url).ok()?;
                let url = format!("{}://{}", addr.scheme(), addr.host_header);
                let was_up = old.peers.iter().find(|p| p.url == url).is_none_or(|p| p.is_up());
                let is_self = me.as_deref() == Some(url.as_str());
                Some(Arc::new(Peer { url, addr, is_self, up: AtomicBool::new(was_up) }))
            })
            .collect();
        self.members.store(Arc::new(Members {
            peers,
            secret: config.secret.clone(),
            probe_interval: config.probe_interval,
        }));
    }

    /// Whether a request with this `PEER_HEADER` value came from a peer.
    pub fn is_peer_request(&self, header: Option<&[u8]>) -> bool {
        let members = self.members.load();
        let secret = members.secret.as_bytes();
        match header {
            Some(v) if !secret.is_empty() && v.len() == secret.len() => {
                v.iter().zip(secret).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
            }
            _ => false,
        }
    }

    /// The peers to ask for `bucket`/`key` before the origin, in the order to ask them: the up
    /// peers that rank above this node in the key's rendezvous order. Empty when this node owns
    /// the key (or no fleet is configured): then it asks the origin itself.
    pub fn peers_before_self(&self, bucket: &str, key: &str) -> (Vec<OriginAddr>, String) {
        let members = self.members.load();
        let mut ranked: Vec<(u64, &Arc<Peer>)> =
            members.peers.iter().map(|p| (score(&p.url, bucket, key), p)).collect();
        ranked.sort_unstable_by_key(|(score, _)| std::cmp::Reverse(*score));
        let before: Vec<OriginAddr> = ranked
            .iter()
            .take_while(|(_, p)| !p.is_self)
            .filter(|(_, p)| p.is_up())
            .map(|(_, p)| p.addr.clone())
            .collect();
        (before, members.secret.clone())
    }

    /// The owner of `bucket`/`key` among every configured peer, up or not.
    #[cfg(test)]
    fn owner(&self, bucket: &str, key: &str) -> Option<String> {
        let members = self.members.load();
        members.peers.iter().max_by_key(|p| score(&p.url, bucket, key)).map(|p| p.url.clone())
    }

    /// Peers configured and peers up now (this node included).
    pub fn counts(&self) -> (usize, usize) {
        let members = self.members.load();
        (members.peers.len(), members.peers.iter().filter(|p| p.is_up()).count())
    }

    /// Probes every other peer, for ever (on a thread of its own): an HTTP request to its data
    /// plane must be answered, with any status, within the probe interval (at most 2 s). A
    /// change is logged.
    pub fn probe_forever(self: Arc<Self>) {
        // The probe carries the secret: a peer configured with another secret is down for this
        // node (its answers would not be a peer's), and probes are not counted as requests.
        loop {
            let members = self.members.load_full();
            let interval = match members.peers.is_empty() {
                true => Duration::from_secs(1),
                false => members.probe_interval.max(Duration::from_millis(100)),
            };
            for peer in members.peers.iter().filter(|p| !p.is_self) {
                let up = probe(&peer.addr, &members.secret, interval.min(Duration::from_secs(2)));
                if peer.up.swap(up, Ordering::Relaxed) != up {
                    if up {
                        tracing::info!(peer = %peer.url, "fleet peer is up");
                    } else {
                        tracing::warn!(peer = %peer.url, "fleet peer is down: its keys go to the next peer in hash order");
                    }
                }
            }
            std::thread::sleep(interval);
        }
    }
}

/// The rendezvous score of `peer` for a key: stable across processes and versions (xxh3 with
/// its default seed), with separators so that no two (peer, bucket, key) run together alike.
fn score(peer: &str, bucket: &str, key: &str) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(peer.as_bytes());
    h.update(&[0]);
    h.update(bucket.as_bytes());
    h.update(&[0]);
    h.update(key.as_bytes());
    h.digest()
}

/// A peer URL as the fleet compares them: `scheme://host[:port]`, without a default port.
pub fn normalized(url: &str) -> Result<String, String> {
    peer_addr(url).map(|a| format!("{}://{}", a.scheme(), a.host_header))
}

/// A peer URL's address: `http(s)://host:port` (any path is refused: a peer is a node's data
/// plane, addressed path-style as `/{bucket}/{key}`).
pub fn peer_addr(url: &str) -> Result<OriginAddr, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("'{url}': {e}"))?;
    let tls = match parsed.scheme() {
        "http" => false,
        "https" => true,
        other => return Err(format!("'{url}': scheme {other} is not http or https")),
    };
    let host = parsed.host_str().ok_or_else(|| format!("'{url}': no host"))?;
    if parsed.path() != "/" || parsed.query().is_some() {
        return Err(format!("'{url}': a peer is a node's address, without a path"));
    }
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok(OriginAddr::new(tls, host, parsed.port(), "/"))
}

/// One probe: connect, send `HEAD /` with the secret, and wait for a 200 (see `s3::handle`).
fn probe(addr: &OriginAddr, secret: &str, timeout: Duration) -> bool {
    let Ok(mut targets) = (addr.host.as_str(), addr.port).to_socket_addrs() else { return false };
    let Some(target): Option<SocketAddr> = targets.next() else { return false };
    let Ok(mut stream) = TcpStream::connect_timeout(&target, timeout) else { return false };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    let request = format!(
        "HEAD / HTTP/1.1\r\nHost: {}\r\n{PEER_HEADER}: {secret}\r\nConnection: close\r\n\r\n",
        addr.host_header
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    let mut got = 0;
    while got < head.len() {
        match stream.read(&mut head[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    head[..got].starts_with(b"HTTP/1.1 200")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(peers: &[&str], me: &str) -> Fleet {
        Fleet::new(Some(&FleetConfig {
            self_url: me.into(),
            peers: peers.iter().map(|p| p.to_string()).collect(),
            secret: "s3cret".into(),
            probe_interval: Duration::from_secs(1),
        }))
    }

    const PEERS: [&str; 3] = ["http://10.0.0.1:8080", "http://10.0.0.2:8080", "http://10.0.0.3:8080"];

    #[test]
    fn every_node_agrees_on_the_owner_and_keys_spread() {
        let nodes: Vec<Fleet> = PEERS.iter().map(|me| fleet(&PEERS, me)).collect();
        let mut owned = [0usize; 3];
        for i in 0..3000 {
            let key = format!("img/{i}.png");
            let owners: Vec<String> = nodes.iter().map(|n| n.owner("b", &key).unwrap()).collect();
            assert!(owners.iter().all(|o| *o == owners[0]), "{key}: {owners:?}");
            let at = PEERS.iter().position(|p| *p == owners[0]).unwrap();
            owned[at] += 1;
            // The owner asks nobody; the others ask exactly the owner first.
            for (n, me) in nodes.iter().zip(PEERS) {
                let (before, _) = n.peers_before_self("b", &key);
                if me == owners[0] {
                    assert!(before.is_empty());
                } else {
                    assert_eq!(format!("http://{}", before[0].host_header), owners[0]);
                }
            }
        }
        assert!(owned.iter().all(|&n| (800..1200).contains(&n)), "uneven: {owned:?}");
    }

    #[test]
    fn removing_a_peer_moves_only_its_keys() {
        let three = fleet(&PEERS, PEERS[0]);
        let two = fleet(&PEERS[..2], PEERS[0]);
        for i in 0..2000 {
            let key = format!("k{i}");
            let before = three.owner("b", &key).unwrap();
            if before != PEERS[2] {
                assert_eq!(two.owner("b", &key).unwrap(), before, "{key} moved though its owner stayed");
            }
        }
    }

    #[test]
    fn a_down_peer_is_skipped_and_the_secret_is_checked() {
        let me = fleet(&PEERS, PEERS[2]);
        let key = (0..).map(|i| format!("k{i}")).find(|k| me.owner("b", k).as_deref() == Some(PEERS[0])).unwrap();
        let (before, _) = me.peers_before_self("b", &key);
        assert_eq!(format!("http://{}", before[0].host_header), PEERS[0]);
        me.members.load().peers[0].up.store(false, Ordering::Relaxed);
        let (before, _) = me.peers_before_self("b", &key);
        assert!(before.iter().all(|a| format!("http://{}", a.host_header) != PEERS[0]), "{before:?}");
        assert!(me.is_peer_request(Some(b"s3cret")));
        assert!(!me.is_peer_request(Some(b"s3creT")) && !me.is_peer_request(None));
        assert!(!Fleet::new(None).is_peer_request(Some(b"")), "no fleet: no peer requests");
    }

    #[test]
    fn spellings_of_one_url_are_one_peer_and_the_secret_is_never_forwarded() {
        let a = fleet(&["http://10.0.0.1:80/", "http://10.0.0.2:8080"], "http://10.0.0.1");
        let b = fleet(&["http://10.0.0.1", "http://10.0.0.2:8080/"], "http://10.0.0.2:8080");
        for i in 0..200 {
            let key = format!("k{i}");
            assert_eq!(a.owner("b", &key), b.owner("b", &key));
        }
        assert_eq!(a.counts(), (2, 2));
        assert!(a.members.load().peers[0].is_self);
        assert!(crate::rules::is_forbidden_header(PEER_HEADER), "a rule must never pass the secret on");
    }

    #[test]
    fn peer_urls_are_checked() {
        assert!(peer_addr("http://10.0.0.1:8080").is_ok());
        assert!(peer_addr("https://edge-2.example").is_ok());
        assert!(peer_addr("http://10.0.0.1:8080/x/").unwrap_err().contains("without a path"));
        assert!(peer_addr("ftp://h").unwrap_err().contains("scheme"));
    }
}
