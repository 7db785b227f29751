//! Addresses and networks: CIDR arithmetic for rules, and the offline judgements the
//! detectors make about a `sourceIPAddress` (is it an address at all, is it private, which
//! network is it in).
//!
//! keytrail has no geolocation database: it cannot say offline where an address is. Whether
//! it belongs to AWS is `keytrail_model::awsip`'s to say (AWS's published ranges). What this
//! module can say, it says here, and `docs/rules.md` states the limits.

use std::net::IpAddr;

/// An address or a network (`a.b.c.d/n`, `x::/n`; an address alone is a /32 or /128).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cidr {
    pub addr: IpAddr,
    pub len: u8,
}

impl Cidr {
    /// Parse an address or a network. Anonymised logs write octets with leading zeros
    /// (`06.237.252.245`); they are read as decimal.
    pub fn parse(s: &str) -> Option<Cidr> {
        let s = s.trim();
        let (a, len) = match s.split_once('/') {
            Some((a, l)) => (a, Some(l.parse::<u8>().ok()?)),
            None => (s, None),
        };
        let addr = parse_ip(a)?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let len = len.unwrap_or(max);
        (len <= max).then_some(Cidr { addr, len })
    }

    fn bits(&self) -> (u128, u8, bool) {
        match self.addr {
            IpAddr::V4(a) => (u128::from(u32::from(a)), 32, true),
            IpAddr::V6(a) => (u128::from(a), 128, false),
        }
    }

    /// Whether `other` (an address or a network) lies inside this network.
    pub fn contains(&self, other: &Cidr) -> bool {
        let (a, width, v4) = self.bits();
        let (b, _, v4b) = other.bits();
        if v4 != v4b || other.len < self.len {
            return false;
        }
        let shift = u32::from(width - self.len);
        if shift >= 128 {
            return true;
        }
        (a >> shift) == (b >> shift)
    }
}

/// Parse an IPv4 or IPv6 address, accepting zero-padded IPv4 octets.
pub fn parse_ip(s: &str) -> Option<IpAddr> {
    let s = s.trim();
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Some(ip);
    }
    let parts: Vec<&str> = s.split('.').collect();
    if parts.len() != 4 {
        return None;
    }
    let mut o = [0u8; 4];
    for (i, p) in parts.iter().enumerate() {
        if p.is_empty() || p.len() > 3 || !p.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        o[i] = p.parse().ok()?;
    }
    Some(IpAddr::from(o))
}

/// What a `sourceIPAddress` is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// An AWS service name (`ec2.amazonaws.com`) or `AWS Internal`: AWS called on its own.
    Service,
    /// A private, loopback, link-local or shared (CGNAT) address: inside a network, such as
    /// a VPC.
    Private,
    /// A public address.
    Public(IpAddr),
    /// Anything else (empty, unparseable).
    Unknown,
}

pub fn origin(source: &str) -> Origin {
    let s = source.trim();
    if s.is_empty() {
        return Origin::Unknown;
    }
    let Some(ip) = parse_ip(s) else {
        let lower = s.to_ascii_lowercase();
        return if lower.ends_with(".amazonaws.com") || lower == "aws internal" {
            Origin::Service
        } else {
            Origin::Unknown
        };
    };
    let private = match ip {
        IpAddr::V4(a) => {
            let o = a.octets();
            a.is_private()
                || a.is_loopback()
                || a.is_link_local()
                || a.is_unspecified()
                || (o[0] == 100 && (64..128).contains(&o[1]))
        }
        IpAddr::V6(a) => {
            let seg = a.segments();
            a.is_loopback()
                || a.is_unspecified()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
        }
    };
    if private {
        Origin::Private
    } else {
        Origin::Public(ip)
    }
}

/// The network an address belongs to, at a given IPv4 / IPv6 prefix length, as text
/// (`198.51.100.0/24`).
pub fn network(ip: IpAddr, v4_len: u8, v6_len: u8) -> String {
    match ip {
        IpAddr::V4(a) => {
            let len = v4_len.min(32);
            let bits = u32::from(a);
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            format!("{}/{len}", std::net::Ipv4Addr::from(bits & mask))
        }
        IpAddr::V6(a) => {
            let len = v6_len.min(128);
            let bits = u128::from(a);
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            format!("{}/{len}", std::net::Ipv6Addr::from(bits & mask))
        }
    }
}

/// The first 12-digit AWS account IDs in a text (alone, or inside an ARN).
pub fn account_ids(text: &str) -> Vec<&str> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let start = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            if i - start == 12 {
                out.push(&text[start..i]);
            }
        } else {
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_and_cover() {
        let any = Cidr::parse("0.0.0.0/0").expect("cidr");
        let odd = Cidr::parse("208.236.235.254/0").expect("anonymised /0");
        assert!(
            odd.contains(&any),
            "a /0 written with any address covers everything"
        );
        assert!(!Cidr::parse("10.0.0.0/8").expect("c").contains(&any));
        assert!(
            Cidr::parse("10.0.0.0/8")
                .expect("c")
                .contains(&Cidr::parse("10.1.2.3").expect("ip"))
        );
        assert!(
            Cidr::parse("::/0")
                .expect("c")
                .contains(&Cidr::parse("2001:db8::1").expect("ip"))
        );
        assert!(!any.contains(&Cidr::parse("2001:db8::1").expect("ip")));
        assert_eq!(Cidr::parse("06.237.252.245").map(|c| c.len), Some(32));
        assert!(Cidr::parse("1.2.3.4/40").is_none());
        assert!(Cidr::parse("ec2.amazonaws.com").is_none());
    }

    #[test]
    fn origins() {
        assert_eq!(origin("ec2.amazonaws.com"), Origin::Service);
        assert_eq!(origin("AWS Internal"), Origin::Service);
        assert_eq!(origin("10.1.2.3"), Origin::Private);
        assert_eq!(origin("100.64.0.1"), Origin::Private);
        assert!(matches!(origin("198.51.100.77"), Origin::Public(_)));
        assert_eq!(origin(""), Origin::Unknown);
        assert_eq!(
            network(parse_ip("198.51.100.77").expect("ip"), 24, 64),
            "198.51.100.0/24"
        );
        assert_eq!(
            account_ids("arn:aws:iam::193672423079:root and 1234567890123"),
            vec!["193672423079"]
        );
    }
}
