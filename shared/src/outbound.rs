//! The outbound address policy: which addresses a worker may send a source
//! request to.
//!
//! A spec names its source by URL and the source names the next pages, so
//! without a policy a spec could make the fleet fetch its own scheduler
//! API, a worker's `/metrics` or a cloud metadata service, and read the
//! answer back from a dead letter's body excerpt. By default every address
//! that is not public unicast is refused: loopback, private, link-local,
//! unique-local, shared (CGNAT), multicast, unspecified, broadcast,
//! documentation and reserved ranges, and the IPv6 forms that carry such an
//! IPv4 address (`::ffff:127.0.0.1`). The operator allows what the fleet
//! may reach anyway with `outbound_allow` rules:
//!
//! - an address or a CIDR: `127.0.0.1`, `10.0.0.0/8`, `::1`, `fd00::/8`;
//! - a host name, exactly, or every name under a domain: `api.internal`,
//!   `*.svc.cluster.local` (not `svc.cluster.local` itself);
//! - any of these with `:port` to allow that port only: `127.0.0.1:9000`,
//!   `api.internal:8443`, `10.0.0.0/8:443`; an IPv6 address or CIDR with a
//!   port is bracketed: `[::1]:9000`, `[fd00::/8]:443`.
//!
//! A rule naming a host allows whatever that name resolves to. Only http and
//! https URLs pass. This module only decides; `source` applies it to the
//! address each connection is made to, after DNS, so a name that resolves
//! somewhere else at request time cannot pass.

use std::collections::BTreeSet;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use url::{Host, Url};

/// An `outbound_allow` rule that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("outbound_allow rule {rule:?} is not valid: {reason}")]
pub struct RuleError {
    pub rule: String,
    pub reason: String,
}

/// Why an address is refused by default: what kind it is and the range
/// that says so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reserved {
    /// `loopback`, `link-local`, `private`…
    pub kind: &'static str,
    pub range: IpNet,
    /// The IPv4 address an IPv6 one carries (IPv4-compatible, NAT64,
    /// 6to4), when it is that address that is refused.
    pub embedded: Option<Ipv4Addr>,
}

impl fmt::Display for Reserved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.kind, self.range)?;
        if let Some(v4) = self.embedded {
            write!(f, " as the IPv6 form of {v4}")?;
        }
        Ok(())
    }
}

/// Why a URL or an address may not be fetched.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("{host}: scheme `{scheme}` is not allowed; only http and https are")]
    Scheme { host: String, scheme: String },
    #[error("a URL without a host cannot be fetched")]
    NoHost,
    #[error("{}", address_refused(.host, .addr, .why))]
    Address {
        /// The host as the URL names it.
        host: String,
        /// The address it is (an IP literal) or resolved to.
        addr: SocketAddr,
        why: Reserved,
    },
}

fn address_refused(host: &str, addr: &SocketAddr, why: &Reserved) -> String {
    if host == addr.ip().to_string() {
        format!("{addr} is {why}; allow it with outbound_allow")
    } else {
        // Not the address itself: a tenant reads this in its dead letters,
        // and must not map the fleet's internal names by it.
        format!("{host} resolves to an address that is {why}; allow it with outbound_allow")
    }
}

impl Refusal {
    /// The same refusal at `port`: a resolver learns only the host, the
    /// caller knows the port.
    pub fn at_port(mut self, port: u16) -> Refusal {
        if let Refusal::Address { addr, .. } = &mut self {
            addr.set_port(port);
        }
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A CIDR; a single address is a /32 or /128.
    Net(IpNet),
    /// A host name exactly (lower case, without a trailing dot).
    Name(String),
    /// `*.suffix`: every name under `suffix`, not `suffix` itself.
    Under(String),
}

/// One parsed `outbound_allow` rule.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Rule {
    target: Target,
    /// `None`: every port.
    port: Option<u16>,
}

impl Rule {
    fn parse(text: &str) -> Result<Rule, RuleError> {
        let bad = |reason: &str| RuleError {
            rule: text.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(bad("it is empty"));
        }
        let (target, port) = split_port(trimmed).map_err(|reason| bad(&reason))?;
        let bracketed = trimmed.starts_with('[');
        let target = parse_target(target).map_err(|reason| bad(&reason))?;
        if bracketed && !matches!(target, Target::Net(IpNet::V6(_))) {
            return Err(bad("only an IPv6 address or CIDR goes in brackets"));
        }
        Ok(Rule { target, port })
    }

    /// Whether the rule allows connecting to `ip` at `port` for `host`
    /// (`port` `None`: a port no rule names, so only rules for every port
    /// apply). `ip` is canonical (an IPv4-mapped address is IPv4).
    fn allows(&self, host: &str, ip: IpAddr, port: Option<u16>) -> bool {
        if self.port.is_some() && self.port != port {
            return false;
        }
        match &self.target {
            Target::Net(net) => net.contains(&ip),
            Target::Name(name) => host == name,
            Target::Under(suffix) => host
                .strip_suffix(suffix.as_str())
                .is_some_and(|head| !head.is_empty()),
        }
    }
}

/// `target` and the port after it: `host:port`, `1.2.3.4:port`,
/// `10.0.0.0/8:port`, `[v6]:port`, `[v6/len]:port`; a bare IPv6 address
/// has no port.
fn split_port(text: &str) -> Result<(&str, Option<u16>), String> {
    let port = |p: &str| {
        p.parse::<u16>()
            .ok()
            .filter(|&p| p != 0)
            .ok_or_else(|| format!("port {p:?} is not a number from 1 to 65535"))
    };
    if let Some(rest) = text.strip_prefix('[') {
        let (inside, after) = rest
            .split_once(']')
            .ok_or("a `[` without its `]`".to_string())?;
        return match after {
            "" => Ok((inside, None)),
            _ => match after.strip_prefix(':') {
                Some(p) => Ok((inside, Some(port(p)?))),
                None => Err("after `]` only `:port` may follow".to_string()),
            },
        };
    }
    match text.split_once(':') {
        // More than one colon and no brackets: an IPv6 address alone.
        Some((_, rest)) if rest.contains(':') => Ok((text, None)),
        Some((target, p)) => Ok((target, Some(port(p)?))),
        None => Ok((text, None)),
    }
}

fn parse_target(text: &str) -> Result<Target, String> {
    if text.contains('/') {
        let net: IpNet = text
            .parse()
            .map_err(|_| format!("{text:?} is not a CIDR (address/prefix length)"))?;
        if net.trunc() != net {
            return Err(format!(
                "{net} has bits set past its prefix; the network is {}",
                net.trunc()
            ));
        }
        return Ok(Target::Net(canonical_net(net)));
    }
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Ok(Target::Net(canonical_net(IpNet::from(ip))));
    }
    if text.contains(':') {
        return Err(format!("{text:?} is not an IPv6 address"));
    }
    let name = text.trim_end_matches('.').to_ascii_lowercase();
    let (wildcard, name) = match name.strip_prefix("*.") {
        Some(suffix) => (true, suffix.to_string()),
        None => (false, name),
    };
    let label_ok = |l: &str| {
        !l.is_empty() && l.len() <= 63 && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    if name.is_empty() || !name.split('.').all(label_ok) {
        return Err(format!(
            "{text:?} is neither an address, a CIDR nor a host name \
             (letters, digits, `-` and `.`, optionally starting with `*.`)"
        ));
    }
    Ok(if wildcard {
        Target::Under(format!(".{name}"))
    } else {
        Target::Name(name)
    })
}

/// An IPv4-mapped IPv6 network as the IPv4 network it maps, so that it
/// matches the canonical addresses it is compared with.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net {
        if let (Some(v4), true) = (v6.addr().to_ipv4_mapped(), v6.prefix_len() >= 96) {
            if let Ok(mapped) = Ipv4Net::new(v4, v6.prefix_len() - 96) {
                return IpNet::V4(mapped);
            }
        }
    }
    net
}

/// The outbound policy: the operator's allow rules over the default
/// refusal of every address that is not public unicast.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboundPolicy {
    rules: Vec<Rule>,
}

impl OutboundPolicy {
    /// Reads `outbound_allow`; the first rule that cannot be read is the error.
    pub fn from_rules<S: AsRef<str>>(rules: &[S]) -> Result<OutboundPolicy, RuleError> {
        let rules = rules
            .iter()
            .map(|r| Rule::parse(r.as_ref()))
            .collect::<Result<_, _>>()?;
        Ok(OutboundPolicy { rules })
    }

    /// The ports some rule names: a connection to any other port is judged
    /// by the rules for every port alone.
    pub fn rule_ports(&self) -> BTreeSet<u16> {
        self.rules.iter().filter_map(|r| r.port).collect()
    }

    /// Whether `host` (as a URL names it) may be reached at `addr`.
    pub fn check(&self, host: &str, addr: SocketAddr) -> Result<(), Refusal> {
        self.check_ip(host, addr.ip(), Some(addr.port()))
            .map_err(|r| r.at_port(addr.port()))
    }

    /// Like [`check`](Self::check) for a port known only as "one no rule
    /// names" (`port` `None`), which is all a resolver shared by such ports
    /// knows; a refusal then says port 0 until [`Refusal::at_port`].
    pub fn check_ip(&self, host: &str, ip: IpAddr, port: Option<u16>) -> Result<(), Refusal> {
        let host = normal_host(host);
        let canonical = ip.to_canonical();
        if self.rules.iter().any(|r| r.allows(&host, canonical, port)) {
            return Ok(());
        }
        match reserved(canonical) {
            None => Ok(()),
            Some(why) => Err(Refusal::Address {
                host,
                addr: SocketAddr::new(ip, port.unwrap_or(0)),
                why,
            }),
        }
    }

    /// What the URL alone decides: the scheme, and the address when the
    /// host is one (an IP literal, which no resolver sees) or is
    /// `localhost` (which always means loopback). Other names pass here
    /// and are judged on the addresses they resolve to.
    pub fn check_url(&self, url: &Url) -> Result<(), Refusal> {
        let host = url.host().ok_or(Refusal::NoHost)?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refusal::Scheme {
                host: host.to_string(),
                scheme: url.scheme().to_string(),
            });
        }
        let port = url.port_or_known_default().unwrap_or(0);
        match host {
            Host::Ipv4(v4) => self.check(&v4.to_string(), SocketAddr::new(v4.into(), port)),
            Host::Ipv6(v6) => self.check(&v6.to_string(), SocketAddr::new(v6.into(), port)),
            Host::Domain(name) if is_localhost(name) => {
                // Either loopback address will do: a resolver drops the other.
                let at = |ip: IpAddr| self.check(name, SocketAddr::new(ip, port));
                at(Ipv4Addr::LOCALHOST.into())
                    .or_else(|first| at(Ipv6Addr::LOCALHOST.into()).map_err(|_| first))
            }
            Host::Domain(_) => Ok(()),
        }
    }
}

/// A host as rules name it: lower case, no brackets, no trailing dot.
fn normal_host(host: &str) -> String {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// `localhost` and the names under it (RFC 6761).
fn is_localhost(name: &str) -> bool {
    let name = normal_host(name);
    name == "localhost" || name.ends_with(".localhost")
}

const fn v4(a: u8, b: u8, c: u8, d: u8, len: u8) -> Ipv4Net {
    Ipv4Net::new_assert(Ipv4Addr::new(a, b, c, d), len)
}

/// IPv4 ranges refused by default, the first match naming the kind
/// (broadcast before the reserved 240/4 that holds it).
const RESERVED_V4: &[(Ipv4Net, &str)] = &[
    (v4(0, 0, 0, 0, 8), "unspecified (\"this network\")"),
    (v4(10, 0, 0, 0, 8), "private"),
    (v4(100, 64, 0, 0, 10), "shared address space (CGNAT)"),
    (v4(127, 0, 0, 0, 8), "loopback"),
    (v4(169, 254, 0, 0, 16), "link-local"),
    (v4(172, 16, 0, 0, 12), "private"),
    (
        v4(192, 0, 0, 0, 24),
        "reserved for IETF protocol assignments",
    ),
    (v4(192, 0, 2, 0, 24), "documentation"),
    (v4(192, 88, 99, 0, 24), "reserved (deprecated 6to4 relay)"),
    (v4(192, 168, 0, 0, 16), "private"),
    (v4(198, 18, 0, 0, 15), "benchmarking"),
    (v4(198, 51, 100, 0, 24), "documentation"),
    (v4(203, 0, 113, 0, 24), "documentation"),
    (v4(224, 0, 0, 0, 4), "multicast"),
    (v4(255, 255, 255, 255, 32), "broadcast"),
    (v4(240, 0, 0, 0, 4), "reserved"),
];

const fn v6(segments: [u16; 8], len: u8) -> Ipv6Net {
    let [a, b, c, d, e, f, g, h] = segments;
    Ipv6Net::new_assert(Ipv6Addr::new(a, b, c, d, e, f, g, h), len)
}

/// IPv6 ranges refused by default (after the IPv4 address an address
/// carries, if any, was judged).
const RESERVED_V6: &[(Ipv6Net, &str)] = &[
    (v6([0, 0, 0, 0, 0, 0, 0, 0], 128), "unspecified"),
    (v6([0, 0, 0, 0, 0, 0, 0, 1], 128), "loopback"),
    (
        v6([0, 0, 0, 0, 0, 0, 0, 0], 96),
        "IPv4-compatible (deprecated)",
    ),
    (v6([0, 0, 0, 0, 0, 0xffff, 0, 0], 96), "IPv4-mapped"),
    (v6([0, 0, 0, 0, 0xffff, 0, 0, 0], 96), "IPv4-translated"),
    (v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48), "local-use NAT64"),
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0], 64), "discard-only"),
    // A Teredo address tunnels to an IPv4 address of the server's choice.
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0], 32), "Teredo"),
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32), "documentation"),
    (v6([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20), "documentation"),
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7), "unique-local"),
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10), "link-local"),
    (
        v6([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10),
        "site-local (deprecated)",
    ),
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0], 8), "multicast"),
];

/// Why `ip` is refused by default, or `None` for a public address.
pub fn reserved(ip: IpAddr) -> Option<Reserved> {
    match ip {
        IpAddr::V4(ip) => reserved_v4(ip).map(|(range, kind)| Reserved {
            kind,
            range: range.into(),
            embedded: None,
        }),
        IpAddr::V6(ip) => reserved_v6(ip),
    }
}

fn reserved_v4(ip: Ipv4Addr) -> Option<(Ipv4Net, &'static str)> {
    RESERVED_V4
        .iter()
        .find(|(net, _)| net.contains(&ip))
        .copied()
}

fn reserved_v6(ip: Ipv6Addr) -> Option<Reserved> {
    let exact = |net: &Ipv6Net| net.prefix_len() == 128 && net.contains(&ip);
    let table = |only_exact: bool| {
        RESERVED_V6
            .iter()
            .find(|(net, _)| {
                if only_exact {
                    exact(net)
                } else {
                    net.contains(&ip)
                }
            })
            .map(|(net, kind)| Reserved {
                kind,
                range: (*net).into(),
                embedded: None,
            })
    };
    // `::` and `::1` are themselves, not IPv4-compatible forms.
    if let Some(own) = table(true) {
        return Some(own);
    }
    if let Some(carried) = embedded_v4(ip) {
        if let Some((range, kind)) = reserved_v4(carried) {
            return Some(Reserved {
                kind,
                range: range.into(),
                embedded: Some(carried),
            });
        }
    }
    table(false)
}

/// The IPv4 address an IPv6 one carries and may be routed to: mapped
/// (`::ffff:a.b.c.d`), compatible (`::a.b.c.d`), NAT64 (`64:ff9b::/96`)
/// and 6to4 (`2002:AABB:CCDD::/48`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let low = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    match s {
        [0, 0, 0, 0, 0, 0xffff, _, _] | [0, 0, 0, 0, 0, 0, _, _] => Some(low),
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => Some(low),
        [0x2002, hi, lo, ..] => Some(Ipv4Addr::new(
            (hi >> 8) as u8,
            hi as u8,
            (lo >> 8) as u8,
            lo as u8,
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(rules: &[&str]) -> OutboundPolicy {
        OutboundPolicy::from_rules(rules).unwrap()
    }

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn reserved_addresses_are_refused_by_default_and_public_ones_pass() {
        let cases: &[(&str, Option<&str>)] = &[
            ("127.0.0.1", Some("loopback")),
            ("127.255.1.2", Some("loopback")),
            ("169.254.169.254", Some("link-local")),
            ("10.1.2.3", Some("private")),
            ("172.16.0.1", Some("private")),
            ("172.31.255.255", Some("private")),
            ("192.168.1.1", Some("private")),
            ("100.64.0.1", Some("shared address space (CGNAT)")),
            ("100.127.255.255", Some("shared address space (CGNAT)")),
            ("0.0.0.0", Some("unspecified (\"this network\")")),
            ("0.1.2.3", Some("unspecified (\"this network\")")),
            ("224.0.0.1", Some("multicast")),
            ("239.255.255.250", Some("multicast")),
            ("255.255.255.255", Some("broadcast")),
            ("240.0.0.1", Some("reserved")),
            ("192.0.2.5", Some("documentation")),
            ("198.51.100.5", Some("documentation")),
            ("203.0.113.5", Some("documentation")),
            ("198.18.0.1", Some("benchmarking")),
            ("192.0.0.8", Some("reserved for IETF protocol assignments")),
            ("::", Some("unspecified")),
            ("::1", Some("loopback")),
            ("fe80::1", Some("link-local")),
            ("febf::1", Some("link-local")),
            ("fc00::1", Some("unique-local")),
            ("fd12:3456::1", Some("unique-local")),
            ("ff02::1", Some("multicast")),
            ("2001:db8::1", Some("documentation")),
            ("fec0::1", Some("site-local (deprecated)")),
            ("100::1", Some("discard-only")),
            ("64:ff9b:1::1", Some("local-use NAT64")),
            ("::ffff:0:7f00:1", Some("IPv4-translated")),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Some("Teredo")),
            ("3fff::1", Some("documentation")),
            // The IPv6 forms of refused IPv4 addresses.
            ("::ffff:127.0.0.1", Some("loopback")),
            ("::ffff:169.254.169.254", Some("link-local")),
            ("::ffff:10.0.0.1", Some("private")),
            ("::127.0.0.1", Some("loopback")),
            ("::8.8.8.8", Some("IPv4-compatible (deprecated)")),
            ("64:ff9b::a9fe:a9fe", Some("link-local")),
            ("2002:7f00:1::1", Some("loopback")),
            ("2002:c0a8:101::", Some("private")),
            // Public.
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("172.32.0.1", None),
            ("100.128.0.1", None),
            ("169.255.0.1", None),
            ("223.255.255.255", None),
            ("::ffff:8.8.8.8", None),
            ("64:ff9b::808:808", None),
            ("2002:808:808::1", None),
            ("2606:4700::1111", None),
            ("2001:4860:4860::8888", None),
        ];
        let p = OutboundPolicy::default();
        for (ip, want) in cases {
            let at = SocketAddr::new(ip.parse().unwrap(), 80);
            let got = p.check(ip, at).err().map(|r| match r {
                Refusal::Address { why, .. } => why.kind,
                other => panic!("{ip}: {other:?}"),
            });
            assert_eq!(got, *want, "{ip}");
        }
    }

    #[test]
    fn a_refusal_names_the_host_the_address_and_why() {
        let p = OutboundPolicy::default();
        let url = Url::parse("http://169.254.169.254/latest/meta-data/").unwrap();
        assert_eq!(
            p.check_url(&url).unwrap_err().to_string(),
            "169.254.169.254:80 is link-local (169.254.0.0/16); allow it with outbound_allow"
        );
        let named = p
            .check("api.example.com", addr("10.0.0.7:443"))
            .unwrap_err();
        assert_eq!(
            named.to_string(),
            "api.example.com resolves to an address that is private (10.0.0.0/8); \
             allow it with outbound_allow"
        );
        let mapped = Url::parse("http://[::ffff:127.0.0.1]:8080/").unwrap();
        assert_eq!(
            p.check_url(&mapped).unwrap_err().to_string(),
            "[::ffff:127.0.0.1]:8080 is loopback (127.0.0.0/8); allow it with outbound_allow"
        );
        let nat64 = p
            .check("::ffff:1", addr("[64:ff9b::7f00:1]:80"))
            .unwrap_err();
        assert!(
            nat64
                .to_string()
                .contains("loopback (127.0.0.0/8) as the IPv6 form of 127.0.0.1"),
            "{nat64}"
        );
    }

    #[test]
    fn allow_rules_override_the_refusal_for_what_they_match() {
        // (rules, host, address, allowed)
        let cases: &[(&[&str], &str, &str, bool)] = &[
            (&["127.0.0.1"], "127.0.0.1", "127.0.0.1:8080", true),
            (&["127.0.0.1"], "127.0.0.2", "127.0.0.2:8080", false),
            (&["127.0.0.1:9000"], "127.0.0.1", "127.0.0.1:9000", true),
            (&["127.0.0.1:9000"], "127.0.0.1", "127.0.0.1:8080", false),
            (&["127.0.0.0/8"], "127.9.9.9", "127.9.9.9:1", true),
            (&["10.0.0.0/8"], "10.200.0.1", "10.200.0.1:443", true),
            (&["10.0.0.0/8"], "11.0.0.1", "11.0.0.1:443", true),
            (&["10.0.0.0/8:443"], "10.1.1.1", "10.1.1.1:443", true),
            (&["10.0.0.0/8:443"], "10.1.1.1", "10.1.1.1:80", false),
            (&["10.0.0.0/8"], "192.168.0.1", "192.168.0.1:80", false),
            // A name rule allows what the name resolves to.
            (&["api.internal"], "api.internal", "10.0.0.9:443", true),
            (&["api.internal"], "API.Internal.", "10.0.0.9:443", true),
            (&["api.internal"], "other.internal", "10.0.0.9:443", false),
            (
                &["api.internal:8443"],
                "api.internal",
                "10.0.0.9:8443",
                true,
            ),
            (
                &["api.internal:8443"],
                "api.internal",
                "10.0.0.9:443",
                false,
            ),
            (&["*.svc.local"], "orders.svc.local", "10.0.0.9:80", true),
            (&["*.svc.local"], "a.b.svc.local", "10.0.0.9:80", true),
            (&["*.svc.local"], "svc.local", "10.0.0.9:80", false),
            (&["*.svc.local"], "evilsvc.local", "10.0.0.9:80", false),
            // IPv6, bracketed with a port.
            (&["[::1]:9000"], "::1", "[::1]:9000", true),
            (&["[::1]:9000"], "::1", "[::1]:9001", false),
            (&["::1"], "::1", "[::1]:9001", true),
            (&["fd00::/8"], "fd00::5", "[fd00::5]:80", true),
            (&["[fd00::/8]:443"], "fd00::5", "[fd00::5]:443", true),
            (&["[fd00::/8]:443"], "fd00::5", "[fd00::5]:80", false),
            // An IPv4 rule covers the IPv4-mapped form of its address, and
            // a mapped rule the IPv4 address.
            (
                &["127.0.0.1"],
                "::ffff:127.0.0.1",
                "[::ffff:127.0.0.1]:80",
                true,
            ),
            (&["::ffff:127.0.0.1"], "127.0.0.1", "127.0.0.1:80", true),
            (&["::ffff:10.0.0.0/104"], "10.2.3.4", "10.2.3.4:80", true),
            // An allowed IPv4 address does not allow its other IPv6 forms.
            (&["127.0.0.1"], "::127.0.0.1", "[::127.0.0.1]:80", false),
            // Several rules: any one will do.
            (
                &["10.0.0.0/8", "127.0.0.1:9000"],
                "127.0.0.1",
                "127.0.0.1:9000",
                true,
            ),
            (
                &["10.0.0.0/8", "127.0.0.1:9000"],
                "127.0.0.1",
                "127.0.0.1:80",
                false,
            ),
        ];
        for (rules, host, at, allowed) in cases {
            let got = policy(rules).check(host, addr(at));
            assert_eq!(got.is_ok(), *allowed, "{rules:?} {host} {at}: {got:?}");
        }
    }

    #[test]
    fn a_port_no_rule_names_is_judged_by_the_rules_for_every_port() {
        let p = policy(&["127.0.0.1:9000", "10.0.0.0/8"]);
        assert_eq!(p.rule_ports(), BTreeSet::from([9000]));
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(p.check_ip("127.0.0.1", lo, Some(9000)).is_ok());
        assert!(p.check_ip("127.0.0.1", lo, None).is_err());
        let private: IpAddr = "10.3.3.3".parse().unwrap();
        assert!(p.check_ip("x", private, None).is_ok());
        let refused = p.check_ip("x", lo, None).unwrap_err().at_port(8080);
        assert!(
            matches!(refused, Refusal::Address { addr, .. } if addr.port() == 8080),
            "{refused:?}"
        );
        // A name's refusal does not tell the tenant where it points.
        assert!(!refused.to_string().contains("127.0.0.1"), "{refused}");
    }

    #[test]
    fn urls_are_judged_by_scheme_and_literal_address() {
        let p = policy(&["127.0.0.1:9000"]);
        let check = |u: &str| p.check_url(&Url::parse(u).unwrap());
        assert!(check("http://127.0.0.1:9000/items").is_ok());
        assert!(check("https://8.8.8.8/").is_ok());
        assert!(check("http://127.0.0.1:8080/metrics").is_err());
        // Other spellings of loopback are the same address to the URL parser.
        assert!(check("http://2130706433:8080/").is_err());
        assert!(check("http://0x7f.1:8080/").is_err());
        assert!(check("http://0.0.0.0:8080/").is_err());
        assert!(check("http://[::1]:8080/").is_err());
        // `localhost` is loopback whatever resolves it; an allowed loopback
        // address lets it pass.
        assert!(check("http://localhost:8080/").is_err());
        assert!(check("http://LocalHost.:8080/").is_err());
        assert!(check("http://db.localhost:8080/").is_err());
        assert!(check("http://localhost:9000/").is_ok());
        // Other names are judged when resolved.
        assert!(check("http://api.example.com/").is_ok());
        assert_eq!(
            check("ftp://8.8.8.8/x"),
            Err(Refusal::Scheme {
                host: "8.8.8.8".into(),
                scheme: "ftp".into()
            })
        );
        assert_eq!(
            check("file:///etc/passwd").unwrap_err(),
            Refusal::NoHost,
            "no host, whatever the scheme"
        );
        let v6 = policy(&["[::1]:9000"]);
        assert!(v6
            .check_url(&Url::parse("http://localhost:9000/").unwrap())
            .is_ok());
    }

    #[test]
    fn rules_are_parsed_or_named_when_they_cannot_be() {
        let good = [
            "127.0.0.1",
            "10.0.0.0/8",
            "api.internal:8443",
            "[::1]:9000",
            "127.0.0.1:9000",
            "::1",
            "fe80::/10",
            "[fd00::/8]:443",
            "*.svc.cluster.local",
            " host-1.example.com. ",
        ];
        for rule in good {
            assert!(OutboundPolicy::from_rules(&[rule]).is_ok(), "{rule}");
        }
        let bad = [
            ("", "it is empty"),
            ("10.0.0.1/8", "the network is 10.0.0.0/8"),
            ("10.0.0.0/33", "is not a CIDR"),
            ("127.0.0.1:0", "port \"0\""),
            ("127.0.0.1:http", "port \"http\""),
            ("api.internal:70000", "port \"70000\""),
            ("[::1", "without its `]`"),
            ("[::1]9000", "only `:port`"),
            ("[nope]:80", "only an IPv6 address or CIDR goes in brackets"),
            (
                "[10.0.0.1]:80",
                "only an IPv6 address or CIDR goes in brackets",
            ),
            ("nope:x:1", "not an IPv6 address"),
            ("http://api.internal", "port \"//api.internal\""),
            ("api_internal", "neither an address"),
            ("*", "neither an address"),
            ("a..b", "neither an address"),
        ];
        for (rule, says) in bad {
            let err = OutboundPolicy::from_rules(&["8.8.8.8", rule]).unwrap_err();
            assert_eq!(err.rule, rule, "{rule}");
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("outbound_allow rule {rule:?} is not valid: ")),
                "{text}"
            );
            assert!(text.contains(says), "{rule}: {text}");
        }
    }
}
