//! Which webhook URLs are allowed. Default (local development): any parseable http(s) URL up to
//! 2,048 characters, loopback and private addresses included. `--strict` applies the seed's rules:
//! https only, public addresses only — checked at submit and again at connect time, against the
//! addresses the name resolves to then, so DNS cannot point an accepted URL at a private address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use url::{Host, Url};

/// Longest accepted webhook URL (seed).
pub const MAX_URL_LEN: usize = 2_048;

/// Validates a webhook URL at submit time; `Err` is a client-facing message.
pub async fn check_url(raw: &str, strict: bool) -> Result<Url, String> {
    if raw.len() > MAX_URL_LEN {
        return Err(format!(
            "webhook URL is longer than {MAX_URL_LEN} characters"
        ));
    }
    let url = Url::parse(raw).map_err(|e| format!("webhook is not a valid URL: {e}"))?;
    match url.scheme() {
        "https" => {}
        "http" if !strict => {}
        "http" => return Err("webhook must be an https URL".into()),
        other => {
            return Err(format!(
                "webhook URL scheme must be http or https, not {other}"
            ))
        }
    }
    if url.host().is_none() {
        return Err("webhook URL has no host".into());
    }
    if strict {
        resolve_public(&url).await?;
    }
    Ok(url)
}

/// Resolves the URL's host and returns its addresses, refusing any that is not public.
pub async fn resolve_public(url: &Url) -> Result<Vec<SocketAddr>, String> {
    let port = url.port_or_known_default().unwrap_or(443);
    let addrs: Vec<SocketAddr> = match url.host() {
        Some(Host::Ipv4(ip)) => vec![SocketAddr::new(IpAddr::V4(ip), port)],
        Some(Host::Ipv6(ip)) => vec![SocketAddr::new(IpAddr::V6(ip), port)],
        Some(Host::Domain(name)) => {
            if name.eq_ignore_ascii_case("localhost") || name.ends_with(".localhost") {
                return Err(
                    "webhook must be reachable from the public internet, not localhost".into(),
                );
            }
            tokio::net::lookup_host((name, port))
                .await
                .map_err(|e| format!("webhook host {name} does not resolve: {e}"))?
                .collect()
        }
        None => return Err("webhook URL has no host".into()),
    };
    if addrs.is_empty() {
        return Err("webhook host resolves to no address".into());
    }
    if let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
        return Err(format!(
            "webhook must be reachable from the public internet; {} is a private or reserved address",
            bad.ip()
        ));
    }
    Ok(addrs)
}

/// True for addresses on the public internet: not loopback, private, link-local, shared (CGNAT),
/// documentation, benchmarking, multicast, broadcast, unspecified or reserved.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public_v4(v4);
            }
            is_public_v6(v6)
        }
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        || a == 0
        || a >= 240
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (b == 18 || b == 19))
        || (a == 192 && b == 0 && c == 0))
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link local
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64: embeds an IPv4 we cannot vouch for
        || ip.to_ipv4().is_some()) // IPv4-compatible (deprecated) forms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_addresses() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "198.18.0.1",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
        for public in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
    }

    #[tokio::test]
    async fn dev_mode_allows_loopback_http_and_strict_does_not() {
        assert!(check_url("http://127.0.0.1:3000/hook?token=x", false)
            .await
            .is_ok());
        assert!(check_url("http://127.0.0.1:3000/hook", true).await.is_err());
        assert!(check_url("https://127.0.0.1/hook", true).await.is_err());
        assert!(check_url("https://localhost/hook", true).await.is_err());
        assert!(check_url("https://[::1]/hook", true).await.is_err());
        assert!(check_url("https://10.0.0.1/hook", true).await.is_err());
        assert!(check_url("https://8.8.8.8/hook", true).await.is_ok());
        assert!(check_url("ftp://example.com/x", false).await.is_err());
        assert!(check_url("not a url", false).await.is_err());
        let long = format!("http://127.0.0.1/{}", "a".repeat(MAX_URL_LEN));
        assert!(check_url(&long, false).await.is_err());
    }
}
