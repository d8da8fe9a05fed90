//! Where the node may connect: the self-loop and SSRF guard for every origin connection.
//!
//! # Why
//!
//! Mirror rules and origin redirects name hosts the node then connects to. A textual check of
//! the rule's host is not enough: `0.0.0.0:PORT`, `127.1:PORT`, `2130706433:PORT`,
//! `[::ffff:127.0.0.1]:PORT`, `0:PORT` and `localhost.:PORT` all reach this node's own listener,
//! a redirect can point anywhere (one to the admin port made the admin endpoints readable
//! through the data plane), and cloud metadata services (169.254.169.254) hand out credentials.
//! So the decision is made on the *resolved address*, right before each connect, on every hop.
//!
//! # What it owns
//!
//! - [`AddressPolicy`]: the node's listeners, this machine's interface addresses, and the two
//!   operator settings (`allow_private`, `allow_link_local`). [`AddressPolicy::check`] judges
//!   one resolved address; [`AddressPolicy::check_literal`] judges a rule at configuration time
//!   when its host is an IP literal in any form `getaddrinfo` accepts, so an admin API PUT gets
//!   a clear error at once.
//! - [`Refusal`]: why an address was refused.
//! - [`interface_ips`]: this machine's addresses (`getifaddrs`), the only `unsafe` here.
//!
//! It does not resolve names (that is `dns`) and does not connect.
//!
//! # How to use it
//!
//! Check the address you are about to connect to, never the name: resolving once to check and
//! again to connect lets a DNS answer change in between (DNS rebinding). For each address of a
//! resolved host, in order: `check(host, addr)`; skip a refused one; if none is left, fail the
//! fetch with the first refusal (an upstream error: the rule or the origin's redirect is at
//! fault). Do it for the first hop and for every redirect hop.
//!
//! # Rules (after IPv4-mapped and IPv4-compatible IPv6 become IPv4)
//!
//! 1. **Self** ([`Refusal::SelfListener`]): the port is one of the node's listener ports and
//!    the IP is this host: loopback (127/8, `::1`), "this host" (0.0.0.0/8, `::`; Linux routes a
//!    connect to 0.0.0.0 to itself), one of the interface addresses, or that listener's own IP.
//!    Always refused; no setting overrides it.
//! 2. **Unroutable** ([`Refusal::Unroutable`]): multicast (224/4, ff00::/8), 240/4 and the
//!    broadcast address. Always refused; nothing there accepts a TCP connection.
//! 3. **Link-local and metadata** ([`Refusal::LinkLocal`]): 169.254/16, fe80::/10, and the cloud
//!    metadata addresses [`METADATA_IPS`] (some sit outside link-local, e.g. Alibaba's
//!    100.100.100.200 and AWS's `fd00:ec2::254`). Refused unless the rule's host name (case
//!    ignored, trailing dot stripped) or the address itself is listed in `allow_link_local`.
//! 4. **Private** ([`Refusal::Private`]): 10/8, 172.16/12, 192.168/16, 100.64/10 (carrier-grade
//!    NAT), 198.18/15 (benchmarking; used internally by fake-IP proxies), 127/8, 0/8, `::1`,
//!    `::`, fc00::/7, fec0::/10, and any of this host's own interface addresses (a public one
//!    too: reaching this host's other services through the data plane is the same hole).
//!    Refused unless `allow_private`.
//! 5. Anything else is allowed, including the documentation ranges (192.0.2/24, 198.51.100/24,
//!    203.0.113/24, 2001:db8::/32): nothing routes there, and examples and tests use them.
//!
//! NAT64 addresses (64:ff9b::/96, RFC 6052) are judged by the IPv4 address they embed for rules
//! 2-4, since the gateway forwards to it; they are not "this host" for rule 1.
//!
//! Interface addresses are read once, when the policy is built; rebuild it (it is cheap) if
//! the machine's addresses change. The fetch path's self-request guard stays as a second net.

#![deny(unsafe_code)]

use std::fmt;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Cloud metadata endpoints, refused like link-local addresses wherever they sit.
pub const METADATA_IPS: [IpAddr; 6] = [
    // AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle ... instance metadata.
    IpAddr::V4(Ipv4Addr::new(169, 254, 169, 254)),
    // AWS ECS task metadata and credentials.
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 2)),
    // AWS EKS Pod Identity agent.
    IpAddr::V4(Ipv4Addr::new(169, 254, 170, 23)),
    // Alibaba Cloud instance metadata (inside 100.64/10, so not link-local by range).
    IpAddr::V4(Ipv4Addr::new(100, 100, 100, 200)),
    // AWS instance metadata over IPv6 (inside fc00::/7).
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)),
    // AWS EKS Pod Identity agent over IPv6.
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23)),
];

/// Why the node refuses to connect to an address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `addr` is this node's own listener `listener` (a mirror loop, or a way into the admin
    /// port). Never allowed.
    SelfListener { addr: SocketAddr, listener: SocketAddr },
    /// A link-local or cloud metadata address whose host is not in `allow_link_local`.
    LinkLocal(IpAddr),
    /// A private, loopback or this host's own address while `allow_private` is off.
    Private(IpAddr),
    /// Multicast, broadcast or reserved: nothing to connect to.
    Unroutable(IpAddr),
}

impl Refusal {
    /// Short stable label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::SelfListener { .. } => "self",
            Refusal::LinkLocal(_) => "link_local",
            Refusal::Private(_) => "private",
            Refusal::Unroutable(_) => "unroutable",
        }
    }
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::SelfListener { addr, listener } => {
                write!(f, "{addr} is this node's own listener {listener}; a node never fetches from itself")
            }
            Refusal::LinkLocal(ip) => write!(
                f,
                "{ip} is a link-local or cloud metadata address; list the host in origin.allow_link_local to allow it"
            ),
            Refusal::Private(ip) => {
                write!(f, "{ip} is a private, loopback or this host's address and origin.allow_private is off")
            }
            Refusal::Unroutable(ip) => write!(f, "{ip} is a multicast, broadcast or reserved address"),
        }
    }
}

impl std::error::Error for Refusal {}

/// Which addresses the node may connect to. Build once at start-up (and again when listeners,
/// interfaces or settings change); share it read-only.
///
/// Defaults of the type are the strict ones (`allow_private` off, no link-local allowed); the
/// node's configuration chooses its own documented defaults.
#[derive(Debug, Clone)]
pub struct AddressPolicy {
    /// The node's listeners, IPs canonical.
    listeners: Vec<SocketAddr>,
    /// This machine's interface addresses, canonical, without repeats.
    interface_ips: Vec<IpAddr>,
    allow_private: bool,
    /// `allow_link_local` entries that are names: lower-case, trailing dot stripped.
    allow_link_local_names: Vec<String>,
    /// `allow_link_local` entries that are IP literals, canonical.
    allow_link_local_ips: Vec<IpAddr>,
}

/// How an address is judged after the self check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Class {
    Public,
    Private,
    LinkLocal,
    Unroutable,
}

impl AddressPolicy {
    /// A strict policy for a node listening on `listeners` (which may be wildcard addresses
    /// such as `0.0.0.0:80`) on a machine with `interface_ips`.
    pub fn new(listeners: &[SocketAddr], interface_ips: &[IpAddr]) -> AddressPolicy {
        let mut ips: Vec<IpAddr> = Vec::with_capacity(interface_ips.len());
        for ip in interface_ips.iter().map(|ip| canonical_ip(*ip)) {
            if !ips.contains(&ip) {
                ips.push(ip);
            }
        }
        AddressPolicy {
            listeners: listeners.iter().map(|l| SocketAddr::new(canonical_ip(l.ip()), l.port())).collect(),
            interface_ips: ips,
            allow_private: false,
            allow_link_local_names: Vec::new(),
            allow_link_local_ips: Vec::new(),
        }
    }

    /// [`AddressPolicy::new`] with this machine's interface addresses from [`interface_ips`].
    /// If they cannot be read the list is empty (loopback and wildcard addresses are still
    /// recognised); log [`AddressPolicy::interface_count`] at start-up to see what was found.
    pub fn from_system(listeners: &[SocketAddr]) -> AddressPolicy {
        AddressPolicy::new(listeners, &interface_ips().unwrap_or_default())
    }

    /// Allow private, loopback and this host's addresses (except its own listeners).
    pub fn with_allow_private(mut self, allow: bool) -> AddressPolicy {
        self.allow_private = allow;
        self
    }

    /// Host names or IP literals that may resolve to link-local or metadata addresses.
    pub fn with_allow_link_local<I, S>(mut self, entries: I) -> AddressPolicy
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        for entry in entries {
            let entry = entry.as_ref().trim();
            match parse_ip(entry) {
                Some(ip) => self.allow_link_local_ips.push(canonical_ip(ip)),
                None => self.allow_link_local_names.push(normalize_name(entry)),
            }
        }
        self
    }

    /// Interface addresses the policy knows (for the start-up log line).
    pub fn interface_count(&self) -> usize {
        self.interface_ips.len()
    }

    /// Judges one resolved address of `host` (the name from the rule or the redirect, used for
    /// the `allow_link_local` match). Call it right before connecting to `addr`.
    pub fn check(&self, host: &str, addr: SocketAddr) -> Result<(), Refusal> {
        let ip = canonical_ip(addr.ip());
        if let Some(listener) = self.listeners.iter().find(|l| l.port() == addr.port() && self.is_this_host(ip, l.ip()))
        {
            return Err(Refusal::SelfListener { addr, listener: *listener });
        }
        let class = match classify(ip) {
            // A public address of this machine still reaches this machine's other services.
            Class::Public if self.interface_ips.contains(&ip) => Class::Private,
            class => class,
        };
        match class {
            Class::Public => Ok(()),
            Class::Unroutable => Err(Refusal::Unroutable(ip)),
            Class::LinkLocal if self.is_link_local_allowed(host, ip) => Ok(()),
            Class::LinkLocal => Err(Refusal::LinkLocal(ip)),
            Class::Private if self.allow_private => Ok(()),
            Class::Private => Err(Refusal::Private(ip)),
        }
    }

    /// Judges an address the operator configured outside the rules (a fleet peer, the shared
    /// store): private addresses are allowed whatever `allow_private` says, as such clusters
    /// live on private networks; this node's own listeners, unroutable addresses and link-local
    /// ones (unless allowed by name) are refused as for a rule's.
    pub fn check_configured(&self, host: &str, addr: SocketAddr) -> Result<(), Refusal> {
        match self.check(host, addr) {
            Err(Refusal::Private(_)) => Ok(()),
            other => other,
        }
    }

    /// Judges a rule's `host:port` at configuration time when the host is an address literal
    /// in any form `getaddrinfo` accepts (see [`literal_ips`]). Names it cannot decide without
    /// DNS return `Ok`: they are checked at connect time.
    pub fn check_literal(&self, host: &str, port: u16) -> Result<(), Refusal> {
        literal_ips(host).iter().try_for_each(|ip| self.check(host, SocketAddr::new(*ip, port)))
    }

    /// `ip` is this host as seen from a listener bound to `listener_ip`.
    fn is_this_host(&self, ip: IpAddr, listener_ip: IpAddr) -> bool {
        ip.is_loopback() || is_this_host_range(ip) || ip == listener_ip || self.interface_ips.contains(&ip)
    }

    fn is_link_local_allowed(&self, host: &str, ip: IpAddr) -> bool {
        if self.allow_link_local_ips.contains(&ip) {
            return true;
        }
        let host = host.trim_end_matches('.');
        self.allow_link_local_names.iter().any(|name| name.eq_ignore_ascii_case(host))
    }
}

/// IPv4-mapped (`::ffff:a.b.c.d`) and IPv4-compatible (`::a.b.c.d`, deprecated by RFC 4291
/// §2.5.5.1) IPv6 addresses as the IPv4 address they carry; everything else unchanged. `::`
/// and `::1` stay IPv6: they are IPv6's own unspecified and loopback addresses.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    let IpAddr::V6(v6) = ip else { return ip };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return IpAddr::V4(v4);
    }
    let s = v6.segments();
    if s[..6] == [0; 6] && !v6.is_unspecified() && !v6.is_loopback() {
        return IpAddr::V4(embedded_v4(v6));
    }
    ip
}

/// The IPv4 address in the last 32 bits of `v6`.
fn embedded_v4(v6: Ipv6Addr) -> Ipv4Addr {
    let o = v6.octets();
    Ipv4Addr::new(o[12], o[13], o[14], o[15])
}

/// 0.0.0.0/8 and `::`: "this host" (RFC 1122 §3.2.1.3); Linux connects 0.0.0.0 to itself.
fn is_this_host_range(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.octets()[0] == 0,
        IpAddr::V6(v6) => v6.is_unspecified(),
    }
}

/// The class of a canonical address, before the self check and the interface list.
fn classify(ip: IpAddr) -> Class {
    if METADATA_IPS.contains(&ip) {
        return Class::LinkLocal;
    }
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            if o[0] == 169 && o[1] == 254 {
                Class::LinkLocal
            } else if o[0] >= 224 {
                // 224/4 multicast, 240/4 reserved, 255.255.255.255 broadcast.
                Class::Unroutable
            } else if o[0] == 0
                || o[0] == 10
                || o[0] == 127
                || (o[0] == 172 && o[1] & 0xf0 == 16)
                || (o[0] == 192 && o[1] == 168)
                || (o[0] == 100 && o[1] & 0xc0 == 64)
                || (o[0] == 198 && o[1] & 0xfe == 18)
            {
                Class::Private
            } else {
                Class::Public
            }
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            if v6.is_unspecified() || v6.is_loopback() {
                Class::Private
            } else if s[0] & 0xff00 == 0xff00 {
                Class::Unroutable
            } else if s[0] & 0xffc0 == 0xfe80 {
                Class::LinkLocal
            } else if s[0] & 0xfe00 == 0xfc00 || s[0] & 0xffc0 == 0xfec0 {
                // fc00::/7 unique local, fec0::/10 deprecated site-local.
                Class::Private
            } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
                // NAT64 well-known prefix: the gateway connects to the embedded IPv4 address.
                classify(IpAddr::V4(embedded_v4(v6)))
            } else {
                Class::Public
            }
        }
    }
}

/// The addresses `getaddrinfo` returns for `host` without asking DNS, or an empty list when
/// only DNS can tell. Accepted forms:
/// - IP literals, bracketed or not (`::1`, `[::ffff:127.0.0.1]`), IPv6 with a zone
///   (`fe80::1%eth0`; the zone is ignored);
/// - the legacy IPv4 forms of `inet_aton` that glibc's `getaddrinfo` accepts: 1 to 4 parts,
///   each decimal, octal (leading `0`) or hex (`0x`), the last part filling the remaining bytes
///   (`127.1`, `2130706433`, `0x7f.1`, `0177.0.0.1`, `0`);
/// - `localhost` and `*.localhost`, with or without a trailing dot: loopback (RFC 6761 §6.3;
///   glibc with systemd's resolver and curl answer so without consulting DNS).
pub fn literal_ips(host: &str) -> Vec<IpAddr> {
    if let Some(ip) = parse_ip(host) {
        return vec![ip];
    }
    if let Some(v4) = parse_inet_aton(host) {
        return vec![IpAddr::V4(v4)];
    }
    let name = normalize_name(host);
    if name == "localhost" || name.ends_with(".localhost") {
        return vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)];
    }
    Vec::new()
}

/// A standard IP literal: `192.0.2.1`, `2001:db8::1`, `[2001:db8::1]`, `fe80::1%eth0`.
fn parse_ip(host: &str) -> Option<IpAddr> {
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Some(ip);
    }
    // A zone (`%eth0`, or `%25eth0` percent-encoded in a URL) names an interface, not a place.
    let (addr, _zone) = host.split_once('%')?;
    addr.parse::<Ipv6Addr>().ok().map(IpAddr::V6)
}

/// glibc's `inet_aton` (`inet_addr.c`): parts separated by '.', each starting with a digit and
/// read by `strtoul(.., 0)`; every part but the last is one byte, the last fills the rest.
/// Trailing characters are rejected (glibc's `getaddrinfo` uses the exact variant).
fn parse_inet_aton(host: &str) -> Option<Ipv4Addr> {
    let mut parts = [0u32; 4];
    let mut count = 0;
    for part in host.split('.') {
        if count == parts.len() {
            return None;
        }
        parts[count] = parse_c_number(part)?;
        count += 1;
    }
    let (leading, last) = parts[..count].split_at(count.checked_sub(1)?);
    if leading.iter().any(|p| *p > 0xff) {
        return None;
    }
    // The last part covers the bytes the leading parts left: 4, 3, 2 or 1 of them.
    let last_bits = 8 * (4 - leading.len() as u32);
    let last = last[0];
    if last_bits < 32 && last >> last_bits != 0 {
        return None;
    }
    let high = leading.iter().enumerate().fold(0u32, |acc, (i, p)| acc | p << (24 - 8 * i as u32));
    Some(Ipv4Addr::from(high | last))
}

/// One `strtoul(.., 0)` number as `inet_aton` reads it: `0x`/`0X` + hex digits, `0` + octal
/// digits, or decimal; at most 32 bits.
fn parse_c_number(part: &str) -> Option<u32> {
    let (digits, radix) = if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
        (hex, 16)
    } else if part.len() > 1 && part.starts_with('0') {
        (&part[1..], 8)
    } else {
        (part, 10)
    };
    // `from_str_radix` would also take a sign; inet_aton wants a digit first.
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u32::from_str_radix(digits, radix).ok()
}

/// A host name for comparison: lower-case, without the trailing dot of a fully-qualified name.
fn normalize_name(host: &str) -> String {
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// This machine's interface addresses (IPv4 and IPv6, as listed by the kernel, not yet
/// canonicalised), from `getifaddrs(3)`.
pub fn interface_ips() -> io::Result<Vec<IpAddr>> {
    ifaddrs::collect()
}

/// The `getifaddrs` wrapper: the list is walked and copied into owned values, then freed by
/// `Drop`, so no pointer escapes this module.
#[expect(unsafe_code, reason = "getifaddrs(3) is FFI; this module is the only unsafe in netguard")]
mod ifaddrs {
    use std::io;
    use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use std::ptr;

    /// The list `getifaddrs` returned; freed exactly once, on drop.
    struct List(*mut libc::ifaddrs);

    impl Drop for List {
        fn drop(&mut self) {
            // SAFETY: `self.0` came from a successful `getifaddrs` (checked in `collect`) and
            // `List` is neither `Clone` nor exposed, so this is the one and only free.
            unsafe { libc::freeifaddrs(self.0) }
        }
    }

    pub(super) fn collect() -> io::Result<Vec<IpAddr>> {
        let mut head: *mut libc::ifaddrs = ptr::null_mut();
        // SAFETY: `head` is a valid place for the out-pointer; on success the kernel-filled
        // list belongs to us until `freeifaddrs`.
        if unsafe { libc::getifaddrs(&mut head) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let list = List(head);
        let mut ips = Vec::new();
        let mut node = list.0;
        while !node.is_null() {
            // SAFETY: `node` is non-null and points into the list owned by `list`, which lives
            // until the end of this function.
            let entry = unsafe { &*node };
            node = entry.ifa_next;
            let addr = entry.ifa_addr;
            if addr.is_null() {
                // Interfaces without an address (e.g. some tunnels) have none here.
                continue;
            }
            // SAFETY: `addr` is non-null and points to a socket address of the list; every
            // socket address starts with its family, and `read_unaligned` needs no alignment.
            let family = unsafe { ptr::read_unaligned(ptr::addr_of!((*addr).sa_family)) };
            match i32::from(family) {
                libc::AF_INET => {
                    // SAFETY: the family says this is a `sockaddr_in`, which getifaddrs
                    // allocates in full.
                    let sin = unsafe { ptr::read_unaligned(addr.cast::<libc::sockaddr_in>()) };
                    ips.push(IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr))));
                }
                libc::AF_INET6 => {
                    // SAFETY: the family says this is a `sockaddr_in6`, which getifaddrs
                    // allocates in full.
                    let sin6 = unsafe { ptr::read_unaligned(addr.cast::<libc::sockaddr_in6>()) };
                    ips.push(IpAddr::V6(Ipv6Addr::from(sin6.sin6_addr.s6_addr)));
                }
                // AF_PACKET (link-layer) and others carry no IP address.
                _ => {}
            }
        }
        Ok(ips)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PORT: u16 = 8080;

    fn sa(s: &str) -> SocketAddr {
        s.parse().expect("test socket address")
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("test ip")
    }

    /// Every way of writing "this host" that the old textual check let through.
    const BYPASSES: [&str; 7] = ["0.0.0.0", "127.1", "2130706433", "[::ffff:127.0.0.1]", "0", "localhost.", "0x7f.1"];

    fn policies_listening_on(listener: &str) -> [AddressPolicy; 2] {
        let listeners = [sa(listener)];
        // allow_private on and off: the self rule ignores it.
        [
            AddressPolicy::new(&listeners, &[]).with_allow_private(true),
            AddressPolicy::new(&listeners, &[]).with_allow_private(false),
        ]
    }

    #[test]
    fn bypass_forms_are_refused_as_self_at_configuration() {
        for listener in ["127.0.0.1:8080", "0.0.0.0:8080"] {
            for policy in policies_listening_on(listener) {
                for host in BYPASSES.iter().copied().chain(["0177.0.0.1", "LOCALHOST", "a.localhost", "::1"]) {
                    match policy.check_literal(host, PORT) {
                        Err(Refusal::SelfListener { listener: l, .. }) => assert_eq!(l, sa(listener)),
                        other => panic!("{host}:{PORT} with listener {listener}: {other:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn bypass_addresses_are_refused_as_self_at_connect() {
        // What getaddrinfo returns for the bypass forms, as the connect path sees them.
        let resolved = ["0.0.0.0", "127.0.0.1", "127.0.0.2", "::ffff:127.0.0.1", "::127.0.0.1", "::1", "::"];
        for listener in ["127.0.0.1:8080", "0.0.0.0:8080", "[::]:8080"] {
            for policy in policies_listening_on(listener) {
                for r in resolved {
                    let addr = SocketAddr::new(ip(r), PORT);
                    assert!(
                        matches!(policy.check("origin.example", addr), Err(Refusal::SelfListener { .. })),
                        "{addr} with listener {listener}"
                    );
                }
            }
        }
    }

    #[test]
    fn interface_addresses_on_a_listener_port_are_self() {
        let policy = AddressPolicy::new(&[sa("0.0.0.0:8080"), sa("[::]:9090")], &[ip("192.0.2.2"), ip("fd00::2")])
            .with_allow_private(true);
        for addr in ["192.0.2.2:8080", "[::ffff:192.0.2.2]:8080", "[fd00::2]:8080", "192.0.2.2:9090"] {
            assert!(matches!(policy.check("x", sa(addr)), Err(Refusal::SelfListener { .. })), "{addr}");
        }
        // Another host on the same port is fine.
        assert_eq!(policy.check("x", sa("192.0.2.3:8080")), Ok(()));
    }

    #[test]
    fn listener_ip_itself_is_self_even_if_not_an_interface() {
        let policy = AddressPolicy::new(&[sa("192.0.2.10:443")], &[]).with_allow_private(true);
        assert!(matches!(policy.check("x", sa("192.0.2.10:443")), Err(Refusal::SelfListener { .. })));
        assert_eq!(policy.check("x", sa("192.0.2.11:443")), Ok(()));
    }

    #[test]
    fn configured_peers_and_stores_may_be_private_but_never_this_node_or_metadata() {
        let listeners = [sa("127.0.0.1:8080")];
        let strict = AddressPolicy::new(&listeners, &[]);
        for addr in ["10.0.0.2:8080", "192.168.1.5:3900", "127.0.0.1:3900", "[fd00::5]:3900"] {
            assert!(matches!(strict.check("peer", sa(addr)), Err(Refusal::Private(_))), "{addr}: a rule's");
            assert_eq!(strict.check_configured("peer", sa(addr)), Ok(()), "{addr}: a configured peer's");
        }
        assert!(matches!(strict.check_configured("me", sa("127.0.0.1:8080")), Err(Refusal::SelfListener { .. })));
        assert!(matches!(strict.check_configured("md", sa("169.254.169.254:80")), Err(Refusal::LinkLocal(_))));
        assert!(matches!(strict.check_configured("mc", sa("224.0.0.1:80")), Err(Refusal::Unroutable(_))));
    }

    #[test]
    fn loopback_on_another_port_follows_allow_private() {
        let listeners = [sa("127.0.0.1:8080")];
        let open = AddressPolicy::new(&listeners, &[]).with_allow_private(true);
        let strict = AddressPolicy::new(&listeners, &[]);
        for host in BYPASSES.iter().copied().chain(["127.0.0.1", "::1", "localhost"]) {
            assert_eq!(open.check_literal(host, 9000), Ok(()), "{host}");
            assert!(matches!(strict.check_literal(host, 9000), Err(Refusal::Private(_))), "{host}");
        }
        assert_eq!(strict.check("x", sa("127.0.0.1:9000")), Err(Refusal::Private(ip("127.0.0.1"))));
        assert_eq!(strict.check("x", sa("[::ffff:127.0.0.1]:9000")), Err(Refusal::Private(ip("127.0.0.1"))));
    }

    #[test]
    fn private_ranges() {
        let strict = AddressPolicy::new(&[], &[]);
        let open = AddressPolicy::new(&[], &[]).with_allow_private(true);
        for addr in [
            "10.1.2.3:80",
            "172.16.0.1:80",
            "172.31.255.255:80",
            "192.168.1.1:80",
            "100.64.0.1:80",
            "198.18.0.1:80",
            "[fc00::1]:80",
            "[fd12:3456::1]:80",
            "[::ffff:10.0.0.1]:80",
            "[64:ff9b::a00:1]:80",
        ] {
            assert!(matches!(strict.check("h", sa(addr)), Err(Refusal::Private(_))), "{addr}");
            assert_eq!(open.check("h", sa(addr)), Ok(()), "{addr}");
        }
        assert_eq!(strict.check("h", sa("[fc00::1]:443")), Err(Refusal::Private(ip("fc00::1"))));
        // Just outside the ranges.
        for addr in ["172.32.0.1:80", "100.128.0.1:80", "11.0.0.1:80", "192.169.0.1:80"] {
            assert_eq!(strict.check("h", sa(addr)), Ok(()), "{addr}");
        }
    }

    #[test]
    fn this_hosts_public_address_counts_as_private() {
        let strict = AddressPolicy::new(&[sa("0.0.0.0:80")], &[ip("203.0.113.5")]);
        assert_eq!(strict.check("h", sa("203.0.113.5:22")), Err(Refusal::Private(ip("203.0.113.5"))));
        assert_eq!(strict.clone().with_allow_private(true).check("h", sa("203.0.113.5:22")), Ok(()));
    }

    #[test]
    fn metadata_and_link_local_are_refused_even_with_allow_private() {
        let policy = AddressPolicy::new(&[sa("0.0.0.0:80")], &[]).with_allow_private(true);
        for addr in [
            "169.254.169.254:80",
            "[::ffff:169.254.169.254]:80",
            "[::169.254.169.254]:80",
            "[64:ff9b::a9fe:a9fe]:80",
            "169.254.170.2:80",
            "169.254.1.1:80",
            "100.100.100.200:80",
            "[fd00:ec2::254]:80",
            "[fe80::1]:80",
        ] {
            assert!(matches!(policy.check("metadata.google.internal", sa(addr)), Err(Refusal::LinkLocal(_))), "{addr}");
        }
        assert_eq!(
            policy.check("x", sa("[::ffff:169.254.169.254]:80")),
            Err(Refusal::LinkLocal(ip("169.254.169.254")))
        );
        assert!(matches!(policy.check_literal("169.254.169.254", 80), Err(Refusal::LinkLocal(_))));
        assert!(matches!(policy.check_literal("0xa9.0xfe.0xa9.0xfe", 80), Err(Refusal::LinkLocal(_))));
        assert!(matches!(policy.check_literal("fe80::1%eth0", 80), Err(Refusal::LinkLocal(_))));
    }

    #[test]
    fn allow_link_local_by_name_or_address() {
        let by_name = AddressPolicy::new(&[], &[]).with_allow_link_local(["Metadata.Google.Internal."]);
        let meta = sa("169.254.169.254:80");
        assert_eq!(by_name.check("metadata.google.internal", meta), Ok(()));
        assert_eq!(by_name.check("METADATA.google.internal.", meta), Ok(()));
        assert_eq!(by_name.check("evil.example", meta), Err(Refusal::LinkLocal(ip("169.254.169.254"))));

        let by_ip = AddressPolicy::new(&[], &[]).with_allow_link_local(["169.254.169.254", "[fd00:ec2::254]"]);
        assert_eq!(by_ip.check("anything", meta), Ok(()));
        assert_eq!(by_ip.check("anything", sa("[::ffff:169.254.169.254]:80")), Ok(()));
        assert_eq!(by_ip.check_literal("169.254.169.254", 80), Ok(()));
        assert_eq!(by_ip.check("anything", sa("[fd00:ec2::254]:80")), Ok(()));
        assert!(by_ip.check("anything", sa("169.254.169.253:80")).is_err());
    }

    #[test]
    fn allow_link_local_never_overrides_self() {
        let policy = AddressPolicy::new(&[sa("0.0.0.0:80")], &[ip("169.254.7.7")])
            .with_allow_private(true)
            .with_allow_link_local(["169.254.7.7", "node.local"]);
        assert!(matches!(policy.check("node.local", sa("169.254.7.7:80")), Err(Refusal::SelfListener { .. })));
        assert_eq!(policy.check("node.local", sa("169.254.7.7:81")), Ok(()));
    }

    #[test]
    fn public_addresses_are_allowed() {
        let strict = AddressPolicy::new(&[sa("0.0.0.0:80"), sa("[::]:443")], &[ip("192.0.2.2")]);
        for addr in ["93.184.216.34:80", "[2606:4700::1]:443", "8.8.8.8:443", "[::ffff:93.184.216.34]:80"] {
            assert_eq!(strict.check("origin.example", sa(addr)), Ok(()), "{addr}");
        }
        assert_eq!(strict.check_literal("93.184.216.34", 80), Ok(()));
        assert_eq!(strict.check_literal("[2606:4700::1]", 443), Ok(()));
        // Documentation ranges: allowed (see the module doc).
        assert_eq!(strict.check("h", sa("198.51.100.1:80")), Ok(()));
        assert_eq!(strict.check("h", sa("[2001:db8::1]:80")), Ok(()));
    }

    #[test]
    fn unroutable_is_always_refused() {
        let open = AddressPolicy::new(&[], &[]).with_allow_private(true);
        for addr in ["224.0.0.1:80", "239.1.1.1:80", "240.0.0.1:80", "255.255.255.255:80", "[ff02::1]:80"] {
            assert!(matches!(open.check("h", sa(addr)), Err(Refusal::Unroutable(_))), "{addr}");
        }
    }

    #[test]
    fn names_are_left_to_connect_time() {
        let strict = AddressPolicy::new(&[sa("127.0.0.1:8080")], &[]);
        for host in ["origin.example", "metadata.google.internal", "localhost.example", "127.0.0.1.nip.io", "1.2.3.4.5"]
        {
            assert_eq!(strict.check_literal(host, PORT), Ok(()), "{host}");
            assert!(literal_ips(host).is_empty(), "{host}");
        }
    }

    #[test]
    fn inet_aton_forms() {
        let v4 = |s: &str| parse_inet_aton(s);
        assert_eq!(v4("127.1"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(v4("2130706433"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(v4("0x7f.1"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(v4("0177.0.0.1"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(v4("0x7F000001"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(v4("017700000001"), Some(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(v4("0"), Some(Ipv4Addr::UNSPECIFIED));
        assert_eq!(v4("10.1.65535"), Some(Ipv4Addr::new(10, 1, 255, 255)));
        assert_eq!(v4("192.0.2.1"), Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(v4("4294967295"), Some(Ipv4Addr::BROADCAST));
        for bad in [
            "",
            ".",
            "1.",
            ".1",
            "1..1",
            "1.2.3.4.5",
            "256.1",
            "1.65536.1",
            "1.2.256.1",
            "1.2.3.256",
            "4294967296",
            "08",
            "0x",
            "0xg",
            "+1",
            "-1",
            " 1",
            "1 ",
            "1e3",
            "example",
            "127.0.0.1.",
        ] {
            assert_eq!(v4(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn canonical_forms() {
        assert_eq!(canonical_ip(ip("::ffff:127.0.0.1")), ip("127.0.0.1"));
        assert_eq!(canonical_ip(ip("::7f00:1")), ip("127.0.0.1"));
        assert_eq!(canonical_ip(ip("::1")), ip("::1"));
        assert_eq!(canonical_ip(ip("::")), ip("::"));
        assert_eq!(canonical_ip(ip("2001:db8::1")), ip("2001:db8::1"));
        assert_eq!(canonical_ip(ip("10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn refusals_explain_themselves() {
        let policy = AddressPolicy::new(&[sa("0.0.0.0:8080")], &[]);
        let refusal = policy.check_literal("127.1", 8080).expect_err("self");
        assert_eq!(refusal.as_str(), "self");
        assert_eq!(
            refusal.to_string(),
            "127.0.0.1:8080 is this node's own listener 0.0.0.0:8080; a node never fetches from itself"
        );
        assert!(Refusal::LinkLocal(ip("169.254.169.254")).to_string().contains("allow_link_local"));
        assert!(Refusal::Private(ip("10.0.0.1")).to_string().contains("allow_private"));
    }

    #[test]
    fn interface_ips_are_read() {
        let ips = interface_ips().expect("getifaddrs");
        // Every Linux network namespace has `lo`; an up one carries 127.0.0.1.
        if !ips.is_empty() {
            assert!(ips.iter().any(|ip| ip.is_loopback()), "{ips:?}");
        }
        let policy = AddressPolicy::from_system(&[sa("0.0.0.0:8080")]);
        assert!(policy.interface_count() <= ips.len());
        for ip in ips {
            assert!(matches!(policy.check("h", SocketAddr::new(ip, 8080)), Err(Refusal::SelfListener { .. })), "{ip}");
        }
    }
}
