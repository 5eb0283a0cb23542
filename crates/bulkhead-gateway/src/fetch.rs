//! Bulkhead's own fetch of an image URL a client sent (`crate::content`), so the
//! model's host never fetches anything on a tenant's behalf.
//!
//! The fetch can reach only public addresses: the client's name is resolved by
//! `PublicOnly`, a resolver that drops every address that is not public unicast
//! (loopback, private, link-local with the cloud metadata address, CGNAT, ULA,
//! multicast, documentation ranges, IPv4 hidden in IPv6). The check lives in the
//! resolver, at connect time, rather than in a look-up before the request: a name
//! that answers a public address to the check and a private one to the connect
//! (DNS rebinding) gets nowhere. A URL with a literal address skips DNS, so it is
//! checked the same way before the request and at every redirect hop. No proxy, at
//! most `redirects_max` hops, one timeout over the whole fetch, the body read
//! chunk by chunk and cut at the cap, and only image media types are kept.
//!
//! Must never: connect to an address `is_public` refuses (outside tests that set
//! `loopback_for_tests`); read more than the cap of a body; follow a scheme other
//! than http(s).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use reqwest::Url;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use thiserror::Error;

use crate::content::IMAGE_TYPES;

/// How the fetcher behaves.
#[derive(Debug, Clone, Copy)]
pub struct FetchConfig {
    /// The largest image, in bytes.
    pub bytes_max: usize,
    /// The whole fetch: connect, redirects, headers and body.
    pub timeout: Duration,
    pub redirects_max: usize,
    /// Tests only: also allow loopback addresses, so a test can serve an image on
    /// 127.0.0.1. No setting reaches this; a server never sets it.
    #[doc(hidden)]
    pub loopback_for_tests: bool,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            bytes_max: crate::content::PART_BYTES_MAX_DEFAULT,
            timeout: Duration::from_secs(10),
            redirects_max: 3,
            loopback_for_tests: false,
        }
    }
}

/// Why an image was not fetched. `Refused`: the URL or what it answered is not
/// acceptable; `Remote`: the host failed (unreachable, timed out, a 5xx).
#[derive(Debug, Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum FetchError {
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Remote(String),
}

/// An image as fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedImage {
    /// One of `content::IMAGE_TYPES`.
    pub media_type: String,
    pub bytes: Vec<u8>,
}

/// The fetcher: one client, its resolver and redirect policy built in.
#[derive(Debug, Clone)]
pub struct ImageFetcher {
    http: reqwest::Client,
    config: FetchConfig,
}

impl ImageFetcher {
    pub fn new(config: FetchConfig) -> Result<Self, FetchError> {
        let allow = Allow {
            loopback: config.loopback_for_tests,
        };
        let redirects_max = config.redirects_max;
        let http = reqwest::Client::builder()
            .no_proxy()
            .dns_resolver(Arc::new(PublicOnly { allow }))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > redirects_max {
                    let e = format!("more than {redirects_max} redirects");
                    return attempt.error(e);
                }
                match check_url(attempt.url(), allow) {
                    Ok(()) => attempt.follow(),
                    Err(e) => attempt.error(e),
                }
            }))
            .timeout(config.timeout)
            .connect_timeout(config.timeout)
            .build()
            .map_err(|e| FetchError::Refused(format!("the image fetcher cannot start: {e}")))?;
        Ok(Self { http, config })
    }

    pub fn config(&self) -> FetchConfig {
        self.config
    }

    /// Fetches one image: http(s), public addresses only, at most the cap.
    pub async fn fetch(&self, url: &str) -> Result<FetchedImage, FetchError> {
        let url = Url::parse(url)
            .map_err(|e| FetchError::Refused(format!("the image URL does not parse: {e}")))?;
        check_url(
            &url,
            Allow {
                loopback: self.config.loopback_for_tests,
            },
        )
        .map_err(|e| FetchError::Refused(e.0))?;
        let mut response = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, IMAGE_TYPES.join(", "))
            .send()
            .await
            .map_err(|e| request_error(&e))?;
        let status = response.status();
        if status.is_server_error() {
            return Err(FetchError::Remote(format!(
                "the image host answered {status}"
            )));
        }
        if !status.is_success() {
            return Err(FetchError::Refused(format!(
                "the image host answered {status}"
            )));
        }
        let media_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| v.trim().to_ascii_lowercase())
            .unwrap_or_default();
        if !IMAGE_TYPES.contains(&media_type.as_str()) {
            return Err(FetchError::Refused(format!(
                "the URL is not an image of type {} (it answered {:?})",
                IMAGE_TYPES.join(", "),
                media_type.chars().take(60).collect::<String>()
            )));
        }
        let cap = self.config.bytes_max;
        let too_big = || FetchError::Refused(format!("the image is larger than {cap} bytes"));
        if response.content_length().is_some_and(|n| n > cap as u64) {
            return Err(too_big());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| request_error(&e))? {
            if bytes.len() + chunk.len() > cap {
                return Err(too_big());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(FetchedImage { media_type, bytes })
    }
}

/// A failed request, told apart: our own refusal (a private address, a redirect
/// too many) or the host's failure.
fn request_error(e: &reqwest::Error) -> FetchError {
    // The resolver's and the redirect policy's refusals come back wrapped; their
    // text is ours and names the address or the hop, never a secret.
    let mut source: Option<&dyn std::error::Error> = Some(e);
    while let Some(s) = source {
        if let Some(refusal) = s.downcast_ref::<NotPublic>() {
            return FetchError::Refused(refusal.to_string());
        }
        source = s.source();
    }
    if e.is_redirect() {
        return FetchError::Refused(format!(
            "the image URL redirects where it may not: {}",
            chain(e)
        ));
    }
    if e.is_timeout() {
        return FetchError::Remote("the image host did not answer in time".into());
    }
    FetchError::Remote(format!("the image could not be fetched: {}", chain(e)))
}

/// An error's causes on one line, without the URL (its query string may be
/// something the client keeps private).
fn chain(e: &reqwest::Error) -> String {
    let mut out = Vec::new();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push(s.to_string());
        source = s.source();
    }
    if out.is_empty() {
        return "the request failed".into();
    }
    out.join(": ")
}

/// Which non-public addresses a fetch may still reach: none, outside tests.
#[derive(Debug, Clone, Copy)]
struct Allow {
    loopback: bool,
}

impl Allow {
    fn ip(self, ip: IpAddr) -> bool {
        is_public(ip) || (self.loopback && ip.is_loopback())
    }
}

/// A URL the fetcher may request: http(s), and a literal address only if public.
fn check_url(url: &Url, allow: Allow) -> Result<(), NotPublic> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(NotPublic(format!(
            "only http and https image URLs are fetched, not {}:",
            url.scheme()
        )));
    }
    let Some(host) = url.host_str() else {
        return Err(NotPublic("the image URL has no host".into()));
    };
    // The URL parser wrote any literal address in its one canonical form
    // (`0x7f.1` is `127.0.0.1`; IPv6 in brackets); a name is checked when resolved.
    let literal = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    let Ok(ip) = literal.parse::<IpAddr>() else {
        return Ok(());
    };
    if allow.ip(ip) {
        Ok(())
    } else {
        Err(NotPublic(format!(
            "the image URL points to {ip}, which is not a public address"
        )))
    }
}

/// A refusal of the fetcher's own (a non-public address, another scheme).
#[derive(Debug, Error)]
#[error("{0}")]
struct NotPublic(String);

/// The resolver of every fetch: the system's, then only the public addresses.
#[derive(Debug)]
struct PublicOnly {
    allow: Allow,
}

impl Resolve for PublicOnly {
    fn resolve(&self, name: Name) -> Resolving {
        let allow = self.allow;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            // The port is the connector's; getaddrinfo needs one to run.
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let kept: Vec<SocketAddr> =
                found.iter().copied().filter(|a| allow.ip(a.ip())).collect();
            if kept.is_empty() {
                let shown = found
                    .first()
                    .map_or(String::from("no address"), |a| a.ip().to_string());
                return Err(Box::new(NotPublic(format!(
                    "the image host {host} resolves to {shown}, which is not a public address"
                )))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(kept.into_iter()) as Addrs)
        })
    }
}

/// Public unicast: an address the fetcher may connect to. Everything else is
/// refused — the host itself, its networks, the metadata address, shared and
/// reserved ranges, multicast — including IPv4 addresses written inside IPv6
/// (mapped, compatible, NAT64, 6to4), which reach the same places.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0 // "this network", 0.0.0.0
        || a == 10 // private
        || a == 127 // loopback
        || (a == 100 && (64..128).contains(&b)) // CGNAT 100.64/10
        || (a == 169 && b == 254) // link-local, 169.254.169.254 metadata
        || (a == 172 && (16..32).contains(&b)) // private
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 192 && b == 88 && c == 99) // 6to4 relay anycast
        || (a == 192 && b == 168) // private
        || (a == 198 && (18..20).contains(&b)) // benchmarking
        || (a == 198 && b == 51 && c == 100) // documentation
        || (a == 203 && b == 0 && c == 113) // documentation
        || a >= 224) // multicast, reserved, broadcast
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    // ::a.b.c.d (IPv4-compatible, deprecated) and ::, ::1.
    if s[..6] == [0; 6] {
        return false;
    }
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    // NAT64 (64:ff9b::/96): the IPv4 address is the last 32 bits.
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(embedded(s[6], s[7]));
    }
    // 6to4 (2002::/16): the IPv4 address follows the prefix.
    if s[0] == 0x2002 {
        return is_public_v4(embedded(s[1], s[2]));
    }
    // Global unicast is 2000::/3; of it, refuse the special ranges.
    (s[0] & 0xe000) == 0x2000
        && !(s[0] == 0x2001 && s[1] < 0x0200) // 2001::/23: Teredo, benchmarking, ORCHID…
        && !(s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        && !(s[0] == 0x3fff && s[1] < 0x1000) // documentation 3fff::/20
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_unicast_addresses_are_public() {
        for refused in [
            "0.0.0.0",
            "127.0.0.1",
            "127.1.2.3",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.127.255.255",
            "192.0.0.1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "198.18.0.1",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "ff02::1",
            "2001:db8::1",
            "3fff::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2002:c0a8:101::1",
            "2001::1",
            "fec0::1",
        ] {
            assert!(!is_public(refused.parse().unwrap()), "{refused}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "93.184.215.14",
            "100.63.255.255",
            "100.128.0.1",
            "172.15.255.255",
            "172.32.0.1",
            "169.253.1.1",
            "2606:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn urls_with_literal_addresses_and_other_schemes_are_refused() {
        let strict = Allow { loopback: false };
        let check = |u: &str| check_url(&Url::parse(u).unwrap(), strict).map_err(|e| e.0);
        for u in [
            "http://127.0.0.1/x.png",
            "http://169.254.169.254/latest/meta-data/",
            "http://[::1]:8080/",
            "http://[::ffff:7f00:1]/",
            "http://0x7f.1/", // the URL parser reads it as 127.0.0.1
            "http://2130706433/",
            "http://10.0.0.1/",
        ] {
            let e = check(u).unwrap_err();
            assert!(e.contains("not a public address"), "{u}: {e}");
        }
        assert!(
            check("ftp://example.com/x.png")
                .unwrap_err()
                .contains("only http and https")
        );
        assert!(
            check("https://example.com/x.png").is_ok(),
            "names are checked when resolved"
        );
        assert!(check("http://8.8.8.8/x.png").is_ok());
        let tests = Allow { loopback: true };
        assert!(check_url(&Url::parse("http://127.0.0.1:9/").unwrap(), tests).is_ok());
        assert!(check_url(&Url::parse("http://10.0.0.1/").unwrap(), tests).is_err());
    }

    #[tokio::test]
    async fn a_name_that_resolves_to_loopback_is_refused_at_connect() {
        let fetcher = ImageFetcher::new(FetchConfig::default()).unwrap();
        let e = fetcher
            .fetch("http://localhost:9/cat.png")
            .await
            .unwrap_err();
        assert!(
            matches!(&e, FetchError::Refused(m) if m.contains("localhost") && m.contains("not a public address")),
            "{e:?}"
        );
    }
}
