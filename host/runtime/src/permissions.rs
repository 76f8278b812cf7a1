//! Permissions: host patterns (`https://*.example.com:8443`), operator grants, the
//! effective permissions of a plugin (grants ∩ manifest requests), and the check that an
//! IP address is public.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use crate::manifest::{KvScopeKind, Manifest};

/// URL scheme a host pattern allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Scheme {
    /// `http://`
    Http,
    /// `https://`
    Https,
}

impl Scheme {
    fn default_port(self) -> u16 {
        match self {
            Scheme::Http => 80,
            Scheme::Https => 443,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
        }
    }
}

/// One allowed destination: `scheme://host[:port]`, where `host` may start with `*.` to
/// allow every subdomain (but not the bare domain), or be `*` for every host (public
/// addresses only, unless the operator allows private networks). The port defaults to the
/// scheme's; `:*` allows every port.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HostPattern {
    scheme: Scheme,
    /// Lowercase host name or IP literal; for a wildcard, the suffix after `*.` (empty
    /// for `*`, every host).
    host: String,
    wildcard: bool,
    /// `None`: every port.
    port: Option<u16>,
}

impl HostPattern {
    /// Whether a request to `scheme://host:port` is allowed by this pattern.
    pub fn matches(&self, scheme: Scheme, host: &str, port: u16) -> bool {
        if scheme != self.scheme || self.port.is_some_and(|p| p != port) {
            return false;
        }
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if self.any_host() {
            !host.is_empty()
        } else if self.wildcard {
            host.len() > self.host.len() + 1
                && host.ends_with(&self.host)
                && host.as_bytes()[host.len() - self.host.len() - 1] == b'.'
        } else {
            host == self.host
        }
    }

    /// Whether every destination `other` allows is also allowed by `self` (used to
    /// intersect operator grants with manifest requests).
    pub fn covers(&self, other: &HostPattern) -> bool {
        let port_covered = match (self.port, other.port) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a == b,
        };
        if self.scheme != other.scheme || !port_covered {
            return false;
        }
        if self.any_host() {
            return true;
        }
        if other.any_host() {
            return false;
        }
        match (self.wildcard, other.wildcard) {
            (false, true) => false,
            (false, false) => self.host == other.host,
            (true, false) => {
                // Ports were compared above; only the host is left to match.
                let port = other.port.or(self.port).unwrap_or_default();
                self.matches(other.scheme, &other.host, port)
            }
            (true, true) => {
                other.host == self.host || other.host.ends_with(&format!(".{}", self.host))
            }
        }
    }
}

impl HostPattern {
    fn any_host(&self) -> bool {
        self.wildcard && self.host.is_empty()
    }
}

impl FromStr for HostPattern {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (scheme, rest) = s
            .split_once("://")
            .ok_or_else(|| format!("`{s}` must look like `https://host[:port]`"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "http" => Scheme::Http,
            "https" => Scheme::Https,
            other => return Err(format!("unsupported scheme `{other}` (use http or https)")),
        };
        let rest = rest.strip_suffix('/').unwrap_or(rest);
        if rest.contains(['/', '?', '#', '@']) {
            return Err(format!("`{s}` must not have a path, query or user info"));
        }
        // Split off the port, minding bracketed IPv6 literals.
        let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
            let (addr, after) = v6
                .split_once(']')
                .ok_or_else(|| format!("`{s}`: unterminated IPv6 literal"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| format!("`{s}`: junk after IPv6 literal"))?,
                ),
            };
            (addr.to_string(), port)
        } else {
            match rest.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (rest.to_string(), None),
            }
        };
        let port = match port {
            None => Some(scheme.default_port()),
            Some("*") => None,
            Some(p) => Some(
                p.parse::<u16>()
                    .ok()
                    .filter(|p| *p != 0)
                    .ok_or_else(|| format!("`{s}`: invalid port `{p}`"))?,
            ),
        };
        let host = host.to_ascii_lowercase();
        if host == "*" {
            return Ok(HostPattern {
                scheme,
                host: String::new(),
                wildcard: true,
                port,
            });
        }
        let (wildcard, host) = match host.strip_prefix("*.") {
            Some(suffix) => (true, suffix.to_string()),
            None => (false, host),
        };
        let numeric_tld = host
            .rsplit('.')
            .next()
            .is_some_and(|tld| tld.bytes().all(|b| b.is_ascii_digit()));
        let valid_name = !host.is_empty()
            && !numeric_tld
            && host.len() <= 253
            && host.split('.').all(|label| {
                !label.is_empty()
                    && label.len() <= 63
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        let is_ip = host.parse::<IpAddr>().is_ok();
        if !(valid_name || (is_ip && !wildcard)) {
            return Err(format!("`{s}`: invalid host `{host}`"));
        }
        Ok(HostPattern {
            scheme,
            host,
            wildcard,
            port,
        })
    }
}

impl fmt::Display for HostPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://", self.scheme.as_str())?;
        if self.any_host() {
            f.write_str("*")?;
        } else if self.wildcard {
            write!(f, "*.{}", self.host)?;
        } else if self.host.contains(':') {
            write!(f, "[{}]", self.host)?;
        } else {
            f.write_str(&self.host)?;
        }
        match self.port {
            None => f.write_str(":*"),
            Some(p) if p != self.scheme.default_port() => write!(f, ":{p}"),
            Some(_) => Ok(()),
        }
    }
}

/// What the operator grants one plugin. `None` means "whatever the manifest asks for";
/// a list means "at most these".
#[derive(Debug, Clone)]
pub struct Grant {
    /// Hosts the plugin may reach (each manifest entry must be covered by one of these).
    pub allowed_hosts: Option<Vec<HostPattern>>,
    /// Secret names the plugin may read.
    pub secrets: Option<Vec<String>>,
    /// Whether the plugin may use durable key-value state.
    pub kv: bool,
}

impl Grant {
    /// Grants whatever the manifest requests.
    pub fn as_requested() -> Self {
        Self {
            allowed_hosts: None,
            secrets: None,
            kv: true,
        }
    }

    /// Grants nothing: no hosts, no secrets, no key-value state.
    pub fn nothing() -> Self {
        Self {
            allowed_hosts: Some(Vec::new()),
            secrets: Some(Vec::new()),
            kv: false,
        }
    }
}

/// The operator's grants: a default for every plugin, overrides per capability id, and
/// the network policy.
///
/// The default grants what each manifest requests: installing a plugin (whose manifest
/// lists its requests) is the operator's approval. Private networks are refused unless
/// `allow_private_networks` is set.
#[derive(Debug, Clone)]
pub struct Grants {
    /// Applies to plugins without an entry in `plugins`.
    pub default: Grant,
    /// Per capability id.
    pub plugins: HashMap<String, Grant>,
    /// Let plugins reach private, loopback and link-local addresses (development only).
    pub allow_private_networks: bool,
    /// The most key-value state any plugin may keep per owner (a manifest may ask for less).
    pub kv_quota: KvQuota,
}

impl Default for Grants {
    fn default() -> Self {
        Self {
            default: Grant::as_requested(),
            plugins: HashMap::new(),
            allow_private_networks: false,
            kv_quota: KvQuota::default(),
        }
    }
}

/// How much key-value state a plugin may keep per owner (agent or session; global state is
/// one owner): keys, and bytes of keys and values together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvQuota {
    /// Most keys.
    pub max_keys: u64,
    /// Most bytes.
    pub max_bytes: u64,
}

impl Default for KvQuota {
    /// 10,000 keys and 16 MiB.
    fn default() -> Self {
        Self {
            max_keys: 10_000,
            max_bytes: 16 * 1024 * 1024,
        }
    }
}

/// What a loaded plugin may actually do: manifest requests ∩ operator grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permissions {
    /// Destinations for outgoing HTTP.
    pub allowed_hosts: Vec<HostPattern>,
    /// Readable secret names.
    pub secrets: BTreeSet<String>,
    /// Key-value scope, if granted.
    pub kv: Option<KvScopeKind>,
    /// How much key-value state the plugin may keep per owner: the manifest's `[limits]`
    /// within the operator's ceiling.
    pub kv_quota: KvQuota,
    /// Whether private addresses may be reached.
    pub allow_private_networks: bool,
}

impl Permissions {
    /// Intersects what `manifest` requests with what `grants` allow.
    pub fn effective(manifest: &Manifest, grants: &Grants) -> Self {
        let grant = grants
            .plugins
            .get(manifest.id.as_str())
            .unwrap_or(&grants.default);
        let requested = &manifest.permissions;
        // The intersection: each requested pattern a grant covers, plus each granted
        // pattern narrower than a request (a grant of `https://api.example.com` to a
        // plugin asking for `https://*`).
        let mut allowed_hosts: Vec<HostPattern> = Vec::new();
        for want in &requested.allowed_hosts {
            match &grant.allowed_hosts {
                None => allowed_hosts.push(want.clone()),
                Some(granted) => {
                    if granted.iter().any(|g| g.covers(want)) {
                        allowed_hosts.push(want.clone());
                    } else {
                        allowed_hosts.extend(granted.iter().filter(|g| want.covers(g)).cloned());
                    }
                }
            }
        }
        allowed_hosts.sort();
        allowed_hosts.dedup();
        let secrets = requested
            .secrets
            .iter()
            .filter(|name| match &grant.secrets {
                None => true,
                Some(granted) => granted.contains(name),
            })
            .cloned()
            .collect();
        let kv = if requested.kv && grant.kv {
            Some(requested.kv_scope)
        } else {
            None
        };
        Self {
            allowed_hosts,
            secrets,
            kv,
            allow_private_networks: grants.allow_private_networks,
            kv_quota: KvQuota {
                max_keys: manifest
                    .limits
                    .kv_max_keys
                    .map_or(grants.kv_quota.max_keys, |m| {
                        m.min(grants.kv_quota.max_keys)
                    }),
                max_bytes: manifest
                    .limits
                    .kv_max_bytes
                    .map_or(grants.kv_quota.max_bytes, |m| {
                        m.min(grants.kv_quota.max_bytes)
                    }),
            },
        }
    }

    /// Whether `scheme://host:port` is an allowed destination.
    pub fn allows_host(&self, scheme: Scheme, host: &str, port: u16) -> bool {
        self.allowed_hosts
            .iter()
            .any(|p| p.matches(scheme, host, port))
    }
}

/// True if `ip` is a globally routable unicast address: not loopback, private,
/// link-local, unique-local, CGNAT, multicast, documentation, benchmarking, reserved or
/// unspecified. IPv4-mapped and NAT64 IPv6 addresses are judged by their IPv4 part.
pub fn is_public_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    let private = a == 0 // "this network"
        || a == 10
        || a == 127
        || (a == 100 && (64..128).contains(&b)) // CGNAT
        || (a == 169 && b == 254) // link-local, cloud metadata
        || (a == 172 && (16..32).contains(&b))
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // TEST-NET-1
        || (a == 192 && b == 88 && c == 99) // 6to4 relay
        || (a == 192 && b == 168)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // TEST-NET-2
        || (a == 203 && b == 0 && c == 113) // TEST-NET-3
        || a >= 224; // multicast, reserved, broadcast
    !private
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    let seg = ip.segments();
    // NAT64 well-known prefix 64:ff9b::/96 embeds an IPv4 address.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        let v4 = Ipv4Addr::new(
            (seg[6] >> 8) as u8,
            seg[6] as u8,
            (seg[7] >> 8) as u8,
            seg[7] as u8,
        );
        return is_public_v4(v4);
    }
    let private = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (seg[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (seg[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (seg[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || (seg[0] == 0x2001 && seg[1] == 0x0db8) // documentation
        || (seg[0] == 0x0100 && seg[1..4] == [0, 0, 0]) // discard-only
        || seg[..6] == [0, 0, 0, 0, 0, 0]; // IPv4-compatible (deprecated)
    !private
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> HostPattern {
        s.parse().unwrap()
    }

    #[test]
    fn host_patterns_parse_and_match() {
        let exact = p("https://api.example.com");
        assert!(exact.matches(Scheme::Https, "API.example.com", 443));
        assert!(!exact.matches(Scheme::Http, "api.example.com", 443));
        assert!(!exact.matches(Scheme::Https, "api.example.com", 8443));
        assert!(!exact.matches(Scheme::Https, "evil-api.example.com", 443));

        let wild = p("https://*.example.com:8443");
        assert!(wild.matches(Scheme::Https, "a.example.com", 8443));
        assert!(wild.matches(Scheme::Https, "a.b.example.com", 8443));
        assert!(!wild.matches(Scheme::Https, "example.com", 8443));
        assert!(!wild.matches(Scheme::Https, "badexample.com", 8443));
        assert_eq!(wild.to_string(), "https://*.example.com:8443");

        assert!(p("http://[::1]:8080").matches(Scheme::Http, "[::1]", 8080));

        let any = p("https://*");
        assert!(any.matches(Scheme::Https, "example.org", 443));
        assert!(!any.matches(Scheme::Https, "example.org", 8443));
        assert!(!any.matches(Scheme::Http, "example.org", 443));
        assert_eq!(any.to_string(), "https://*");
        let any_port = p("http://*:*");
        assert!(any_port.matches(Scheme::Http, "127.0.0.1", 31337));
        assert_eq!(any_port.to_string(), "http://*:*");
        assert!(p("https://api.example.com:*").matches(Scheme::Https, "api.example.com", 1));
        assert!(p("http://127.0.0.1").matches(Scheme::Http, "127.0.0.1", 80));

        for bad in [
            "example.com",
            "ftp://example.com",
            "https://example.com/path",
            "https://user@example.com",
            "https://exa mple.com",
            "https://example.com:0",
            "https://*.127.0.0.1",
            "https://",
        ] {
            assert!(
                bad.parse::<HostPattern>().is_err(),
                "{bad} should be rejected"
            );
        }
    }

    #[test]
    fn covers_intersects_grants() {
        assert!(p("https://*.example.com").covers(&p("https://api.example.com")));
        assert!(p("https://*.example.com").covers(&p("https://*.api.example.com")));
        assert!(!p("https://api.example.com").covers(&p("https://*.example.com")));
        assert!(!p("https://*.example.com").covers(&p("https://example.com")));
        assert!(!p("https://*.example.com").covers(&p("http://a.example.com")));
        assert!(p("https://*").covers(&p("https://*.example.com")));
        assert!(!p("https://*").covers(&p("https://example.com:8443")));
        assert!(p("http://*:*").covers(&p("http://127.0.0.1:8080")));
        assert!(!p("https://*.example.com").covers(&p("https://*")));
        assert!(!p("https://a.example.com").covers(&p("https://a.example.com:*")));
    }

    #[test]
    fn a_narrow_grant_narrows_a_broad_request() {
        let manifest = Manifest::parse(
            "id = \"fetch\"\nversion = \"0.1.0\"\ncomponent = \"f.wasm\"\n\
             [permissions]\nallowed_hosts = [\"http://*:*\", \"https://*\"]\n",
            std::path::Path::new("capability.toml"),
        )
        .unwrap();
        let mut grants = Grants::default();
        assert_eq!(
            Permissions::effective(&manifest, &grants).allowed_hosts,
            vec![p("http://*:*"), p("https://*")]
        );
        grants.plugins.insert(
            "fetch".into(),
            Grant {
                allowed_hosts: Some(vec![
                    p("http://127.0.0.1:8080"),
                    p("https://docs.example.com"),
                ]),
                ..Grant::as_requested()
            },
        );
        let effective = Permissions::effective(&manifest, &grants);
        assert!(effective.allows_host(Scheme::Http, "127.0.0.1", 8080));
        assert!(!effective.allows_host(Scheme::Http, "127.0.0.1", 8081));
        assert!(effective.allows_host(Scheme::Https, "docs.example.com", 443));
        assert!(!effective.allows_host(Scheme::Https, "example.org", 443));
    }

    #[test]
    fn public_ip_classification() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a00:1",
            "2001:db8::1",
        ] {
            assert!(!is_public_ip(private.parse().unwrap()), "{private}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public_ip(public.parse().unwrap()), "{public}");
        }
    }
}
