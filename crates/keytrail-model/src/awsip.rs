//! Whether an address belongs to AWS, and to which service and region: AWS's published
//! `ip-ranges.json`, searched by prefix.
//!
//! A dated snapshot of the document is bundled (`data/aws-ip-ranges.json.gz`, see
//! `data/README.md`); [`AwsRanges::load`] reads a newer one (`--aws-ip-ranges FILE`, plain or
//! gzipped). The prefixes are kept in one sorted table per prefix length, so a lookup is one
//! binary search per length present (about 25 for IPv4, 30 for IPv6), the most specific first.
//!
//! What the ranges cannot say: an address outside them may still be a NAT gateway of another
//! cloud, and an address inside them is *any* AWS customer's (an attacker's EC2 instance is an
//! AWS address too). "Inside AWS" means "not obviously outside", never "ours".

use std::io::Read as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use serde::Deserialize;

/// The bundled snapshot, gzipped as AWS publishes it.
const BUNDLED: &[u8] = include_bytes!("../data/aws-ip-ranges.json.gz");

/// Largest ranges document read (AWS's is about 2 MB).
const MAX_SIZE: u64 = 64 << 20;

/// What can go wrong reading a ranges document.
#[derive(Debug, thiserror::Error)]
pub enum AwsRangesError {
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{origin}: not AWS's ip-ranges.json: {reason}")]
    Invalid { origin: String, reason: String },
}

#[derive(Deserialize)]
struct RawDoc {
    #[serde(rename = "syncToken")]
    sync_token: String,
    #[serde(rename = "createDate")]
    create_date: String,
    #[serde(default)]
    prefixes: Vec<RawPrefix>,
    #[serde(default)]
    ipv6_prefixes: Vec<RawPrefix>,
}

#[derive(Deserialize)]
struct RawPrefix {
    #[serde(default)]
    ip_prefix: Option<String>,
    #[serde(default)]
    ipv6_prefix: Option<String>,
    region: String,
    service: String,
}

/// What the ranges say about one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AwsAddress {
    /// The most specific published prefix holding the address.
    pub prefix: String,
    /// Its region (`us-east-1`, or `GLOBAL`).
    pub region: String,
    /// Every service whose published ranges hold the address, most specific first
    /// (`EC2`, `AMAZON`).
    pub services: Vec<String>,
}

impl AwsAddress {
    /// The most specific service other than the catch-all `AMAZON`, else `AMAZON`.
    pub fn service(&self) -> &str {
        self.services
            .iter()
            .find(|s| *s != "AMAZON")
            .or(self.services.first())
            .map_or("AMAZON", String::as_str)
    }
}

#[derive(Clone, Debug)]
struct Entry {
    region: u16,
    service: u16,
}

/// One prefix length's networks, sorted.
#[derive(Clone, Debug, Default)]
struct Level {
    len: u8,
    nets: Vec<(u128, Entry)>,
}

/// AWS's address ranges, loaded once.
#[derive(Clone, Debug)]
pub struct AwsRanges {
    /// `syncToken` of the document (seconds since the epoch of its publication).
    pub sync_token: String,
    /// `createDate` as an RFC 3339 time (`2025-07-24T20:23:14Z`).
    pub created: String,
    /// Where it came from: `bundled` or the file's path.
    pub origin: String,
    pub v4_prefixes: usize,
    pub v6_prefixes: usize,
    strings: Vec<String>,
    v4: Vec<Level>,
    v6: Vec<Level>,
}

fn mask(bits: u128, len: u8, width: u8) -> u128 {
    if len == 0 {
        return 0;
    }
    let shift = u32::from(width - len);
    if shift >= 128 {
        0
    } else {
        (bits >> shift) << shift
    }
}

fn parse_prefix(text: &str) -> Option<(IpAddr, u8)> {
    let (a, l) = text.trim().split_once('/')?;
    let ip: IpAddr = a.parse().ok()?;
    let len: u8 = l.parse().ok()?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    (len <= max).then_some((ip, len))
}

fn bits(ip: IpAddr) -> (u128, u8) {
    match ip {
        IpAddr::V4(a) => (u128::from(u32::from(a)), 32),
        IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(v4) => (u128::from(u32::from(v4)), 32),
            None => (u128::from(a), 128),
        },
    }
}

/// `2025-07-24-20-23-14` → `2025-07-24T20:23:14Z`; anything else as it is.
fn created_time(s: &str) -> String {
    let p: Vec<&str> = s.split('-').collect();
    if p.len() == 6 && p.iter().all(|x| x.bytes().all(|b| b.is_ascii_digit())) {
        let sec = &p[5][..p[5].len().min(2)];
        format!("{}-{}-{}T{}:{}:{sec}Z", p[0], p[1], p[2], p[3], p[4])
    } else {
        s.to_owned()
    }
}

impl AwsRanges {
    /// The bundled snapshot (decompressed and indexed on first use).
    pub fn bundled() -> Arc<AwsRanges> {
        static B: OnceLock<Arc<AwsRanges>> = OnceLock::new();
        Arc::clone(B.get_or_init(|| {
            let text = gunzip(BUNDLED).unwrap_or_default();
            // The bundled document is checked by a test; an empty table is the fallback
            // that can never be reached in a build that passed its tests.
            Arc::new(
                AwsRanges::parse(&text, "bundled").unwrap_or_else(|_| AwsRanges::empty("bundled")),
            )
        }))
    }

    fn empty(origin: &str) -> AwsRanges {
        AwsRanges {
            sync_token: String::new(),
            created: String::new(),
            origin: origin.to_owned(),
            v4_prefixes: 0,
            v6_prefixes: 0,
            strings: Vec::new(),
            v4: Vec::new(),
            v6: Vec::new(),
        }
    }

    /// Read a ranges document (JSON, gzipped or not) from a file.
    pub fn load(path: &Path) -> Result<AwsRanges, AwsRangesError> {
        let read = |source| AwsRangesError::Read {
            path: path.to_path_buf(),
            source,
        };
        let f = std::fs::File::open(path).map_err(read)?;
        let mut raw = Vec::new();
        f.take(MAX_SIZE + 1).read_to_end(&mut raw).map_err(read)?;
        let origin = path.display().to_string();
        if raw.len() as u64 > MAX_SIZE {
            return Err(AwsRangesError::Invalid {
                origin,
                reason: format!("larger than {} MiB", MAX_SIZE >> 20),
            });
        }
        let text = if raw.starts_with(&[0x1f, 0x8b]) {
            gunzip(&raw).map_err(|reason| AwsRangesError::Invalid {
                origin: origin.clone(),
                reason,
            })?
        } else {
            String::from_utf8(raw).map_err(|_| AwsRangesError::Invalid {
                origin: origin.clone(),
                reason: "not UTF-8 text".into(),
            })?
        };
        AwsRanges::parse(&text, &origin)
    }

    /// Parse the text of a ranges document; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<AwsRanges, AwsRangesError> {
        let invalid = |reason: String| AwsRangesError::Invalid {
            origin: origin.to_owned(),
            reason,
        };
        let doc: RawDoc = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut out = AwsRanges::empty(origin);
        out.sync_token = doc.sync_token;
        out.created = created_time(&doc.create_date);
        let mut v4: std::collections::BTreeMap<u8, Vec<(u128, Entry)>> = Default::default();
        let mut v6: std::collections::BTreeMap<u8, Vec<(u128, Entry)>> = Default::default();
        for (i, p) in doc.prefixes.iter().chain(&doc.ipv6_prefixes).enumerate() {
            let text = p
                .ip_prefix
                .as_deref()
                .or(p.ipv6_prefix.as_deref())
                .ok_or_else(|| invalid(format!("prefix {i} has no ip_prefix or ipv6_prefix")))?;
            let (ip, len) = parse_prefix(text)
                .ok_or_else(|| invalid(format!("prefix {i}: `{text}` is not a network")))?;
            let region = out.intern(&p.region);
            let service = out.intern(&p.service);
            let (b, width) = bits(ip);
            let e = Entry { region, service };
            if width == 32 {
                out.v4_prefixes += 1;
                v4.entry(len).or_default().push((mask(b, len, 32), e));
            } else {
                out.v6_prefixes += 1;
                v6.entry(len).or_default().push((mask(b, len, 128), e));
            }
        }
        let levels = |m: std::collections::BTreeMap<u8, Vec<(u128, Entry)>>| {
            let mut v: Vec<Level> = m
                .into_iter()
                .map(|(len, mut nets)| {
                    nets.sort_by_key(|(n, _)| *n);
                    Level { len, nets }
                })
                .collect();
            // Most specific first.
            v.reverse();
            v
        };
        out.v4 = levels(v4);
        out.v6 = levels(v6);
        Ok(out)
    }

    fn intern(&mut self, s: &str) -> u16 {
        if let Some(i) = self.strings.iter().position(|x| x == s) {
            return i as u16;
        }
        self.strings.push(s.to_owned());
        (self.strings.len() - 1) as u16
    }

    /// What the ranges say about `ip`, or `None` when no published prefix holds it.
    pub fn lookup(&self, ip: IpAddr) -> Option<AwsAddress> {
        let (b, width) = bits(ip);
        let levels = if width == 32 { &self.v4 } else { &self.v6 };
        let mut found: Option<AwsAddress> = None;
        for level in levels {
            let net = mask(b, level.len, width);
            let start = level.nets.partition_point(|(n, _)| *n < net);
            for (n, e) in level.nets[start..].iter().take_while(|(n, _)| *n == net) {
                let service = self.strings[usize::from(e.service)].clone();
                match &mut found {
                    None => {
                        let shown = match ip {
                            IpAddr::V6(a) if width == 32 => IpAddr::V4(
                                a.to_ipv4_mapped()
                                    .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED),
                            ),
                            other => other,
                        };
                        let base = match shown {
                            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::from(*n as u32)),
                            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::from(*n)),
                        };
                        found = Some(AwsAddress {
                            prefix: format!("{base}/{}", level.len),
                            region: self.strings[usize::from(e.region)].clone(),
                            services: vec![service],
                        });
                    }
                    Some(a) => {
                        if !a.services.contains(&service) {
                            a.services.push(service);
                        }
                    }
                }
            }
        }
        found
    }

    /// [`AwsRanges::lookup`] of a `sourceIPAddress` as text (`None` for service names and
    /// anything that is not an address).
    pub fn lookup_text(&self, source: &str) -> Option<AwsAddress> {
        source
            .trim()
            .parse::<IpAddr>()
            .ok()
            .and_then(|ip| self.lookup(ip))
    }

    /// Whether a published prefix holds the address.
    pub fn contains(&self, source: &str) -> bool {
        self.lookup_text(source).is_some()
    }

    /// One line for listings: `AWS ip-ranges.json of 2025-07-24T20:23:14Z (syncToken 1753388594, bundled)`.
    pub fn describe(&self) -> String {
        format!(
            "AWS ip-ranges.json of {} (syncToken {}, {}; {} IPv4 and {} IPv6 prefixes)",
            self.created, self.sync_token, self.origin, self.v4_prefixes, self.v6_prefixes
        )
    }
}

fn gunzip(raw: &[u8]) -> Result<String, String> {
    let mut d = flate2::read::MultiGzDecoder::new(raw).take(MAX_SIZE + 1);
    let mut s = String::new();
    d.read_to_string(&mut s)
        .map_err(|e| format!("not a gzipped text: {e}"))?;
    if s.len() as u64 > MAX_SIZE {
        return Err(format!("larger than {} MiB uncompressed", MAX_SIZE >> 20));
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_snapshot_loads_and_answers() {
        let r = AwsRanges::bundled();
        assert_eq!(r.sync_token, "1753388594");
        assert_eq!(r.created, "2025-07-24T20:23:14Z");
        assert_eq!((r.v4_prefixes, r.v6_prefixes), (8971, 4373));
        // 3.5.140.0/22 is S3 in ap-northeast-2 (and AMAZON).
        let a = r.lookup_text("3.5.140.2").expect("an AWS address");
        assert_eq!(a.prefix, "3.5.140.0/22");
        assert_eq!(a.region, "ap-northeast-2");
        assert!(a.services.contains(&"AMAZON".to_owned()), "{a:?}");
        assert!(r.lookup_text("198.51.100.77").is_none());
        assert!(r.lookup_text("10.0.0.1").is_none());
        assert!(r.lookup_text("ec2.amazonaws.com").is_none());
        // 52.4.0.0/14 is EC2 in us-east-1.
        let a = r.lookup_text("52.4.1.1").expect("EC2");
        assert_eq!(a.service(), "EC2");
        assert_eq!(a.region, "us-east-1");
        // IPv6 and IPv4-mapped IPv6.
        assert!(r.lookup_text("::ffff:52.4.1.1").is_some());
        assert!(
            r.lookup_text("2600:1f18::1").is_some(),
            "EC2 us-east-1 IPv6"
        );
        assert!(r.lookup_text("2001:db8::1").is_none());
    }

    #[test]
    fn a_document_of_ones_own_and_bad_ones() {
        let doc = r#"{"syncToken": "1", "createDate": "2024-01-02-03-04-05",
            "prefixes": [{"ip_prefix": "198.51.100.0/24", "region": "eu-west-1", "service": "AMAZON"},
                         {"ip_prefix": "198.51.100.128/25", "region": "eu-west-1", "service": "EC2"}],
            "ipv6_prefixes": [{"ipv6_prefix": "2001:db8::/32", "region": "GLOBAL", "service": "CLOUDFRONT"}]}"#;
        let r = AwsRanges::parse(doc, "mine.json").expect("parses");
        assert_eq!(r.created, "2024-01-02T03:04:05Z");
        let a = r.lookup_text("198.51.100.200").expect("inside");
        assert_eq!(a.prefix, "198.51.100.128/25");
        assert_eq!(a.services, vec!["EC2".to_owned(), "AMAZON".to_owned()]);
        assert_eq!(
            r.lookup_text("198.51.100.5").map(|a| a.services),
            Some(vec!["AMAZON".to_owned()])
        );
        assert_eq!(
            r.lookup_text("2001:db8:1::5").map(|a| a.region),
            Some("GLOBAL".to_owned())
        );
        for (bad, says) in [
            ("{}", "missing field"),
            (
                r#"{"syncToken":"1","createDate":"x","prefixes":[{"ip_prefix":"1.2.3.4/33","region":"r","service":"s"}]}"#,
                "`1.2.3.4/33` is not a network",
            ),
            ("not json", "expected"),
        ] {
            let e = AwsRanges::parse(bad, "bad.json")
                .expect_err(bad)
                .to_string();
            assert!(e.contains("bad.json") && e.contains(says), "{e}");
        }
    }
}
