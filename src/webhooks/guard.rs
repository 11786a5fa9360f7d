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
    if let Some((ip, block)) = addrs
        .iter()
        .find_map(|a| special_block(a.ip()).map(|b| (a.ip(), b)))
    {
        return Err(format!(
            "webhook must be reachable from the public internet; {ip} is in {block}"
        ));
    }
    Ok(addrs)
}

/// IPv4 blocks that are not publicly routable unicast: IANA's IPv4 Special-Purpose Address
/// Registry (every entry not marked globally reachable, and whole blocks where only a few of its
/// addresses are), plus multicast. `(network, prefix length, what it is)`.
pub const SPECIAL_V4: &[([u8; 4], u8, &str)] = &[
    ([0, 0, 0, 0], 8, "\"this network\" (RFC 791)"),
    ([10, 0, 0, 0], 8, "private use (RFC 1918)"),
    ([100, 64, 0, 0], 10, "shared address space (RFC 6598)"),
    ([127, 0, 0, 0], 8, "loopback (RFC 1122)"),
    ([169, 254, 0, 0], 16, "link local (RFC 3927)"),
    ([172, 16, 0, 0], 12, "private use (RFC 1918)"),
    ([192, 0, 0, 0], 24, "IETF protocol assignments (RFC 6890)"),
    ([192, 0, 2, 0], 24, "documentation TEST-NET-1 (RFC 5737)"),
    ([192, 88, 99, 0], 24, "6to4 relay anycast (RFC 7526)"),
    ([192, 168, 0, 0], 16, "private use (RFC 1918)"),
    ([198, 18, 0, 0], 15, "benchmarking (RFC 2544)"),
    ([198, 51, 100, 0], 24, "documentation TEST-NET-2 (RFC 5737)"),
    ([203, 0, 113, 0], 24, "documentation TEST-NET-3 (RFC 5737)"),
    ([224, 0, 0, 0], 4, "multicast (RFC 5771)"),
    ([255, 255, 255, 255], 32, "limited broadcast (RFC 919)"),
    ([240, 0, 0, 0], 4, "reserved (RFC 1112)"),
];

/// IPv6 blocks inside global unicast (`2000::/3`) that are not public, from IANA's IPv6
/// Special-Purpose Address Registry; everything outside `2000::/3` (loopback, unspecified,
/// IPv4-compatible, NAT64 `64:ff9b::/96` and `64:ff9b:1::/48`, discard `100::/64`, segment routing
/// `5f00::/16`, unique local `fc00::/7`, site local `fec0::/10`, link local `fe80::/10`, multicast `ff00::/8`) is refused by
/// the `2000::/3` rule. IPv4-mapped addresses (`::ffff:a.b.c.d`) are judged as the IPv4 address.
pub const SPECIAL_V6: &[([u16; 8], u8, &str)] = &[
    (
        [0x2001, 0, 0, 0, 0, 0, 0, 0],
        23,
        "IETF protocol assignments, Teredo (RFC 2928, 4380)",
    ),
    (
        [0x2001, 0x0db8, 0, 0, 0, 0, 0, 0],
        32,
        "documentation (RFC 3849)",
    ),
    (
        [0x2002, 0, 0, 0, 0, 0, 0, 0],
        16,
        "6to4, embeds any IPv4 address (RFC 3056)",
    ),
    (
        [0x3fff, 0, 0, 0, 0, 0, 0, 0],
        20,
        "documentation (RFC 9637)",
    ),
];

/// True for addresses on the public internet; see [`SPECIAL_V4`] and [`SPECIAL_V6`].
pub fn is_public(ip: IpAddr) -> bool {
    special_block(ip).is_none()
}

/// What makes an address non-public, if anything: the name of the block it falls in.
pub fn special_block(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return special_v4(v4);
            }
            let bits = u128::from(v6);
            if bits >> 125 != 0b001 {
                return Some("outside global unicast 2000::/3");
            }
            SPECIAL_V6.iter().find_map(|(net, len, name)| {
                let net = u128::from(Ipv6Addr::from(*net));
                let mask = u128::MAX.checked_shl(128 - *len as u32).unwrap_or(0);
                (bits & mask == net & mask).then_some(*name)
            })
        }
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let bits = u32::from(ip);
    SPECIAL_V4.iter().find_map(|(net, len, name)| {
        let net = u32::from(Ipv4Addr::from(*net));
        let mask = u32::MAX.checked_shl(32 - *len as u32).unwrap_or(0);
        (bits & mask == net & mask).then_some(*name)
    })
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

    /// Every block of both tables: its first and last address are refused, and where the block
    /// has a public neighbour, the address just past it is allowed.
    #[test]
    fn every_special_purpose_block_is_refused_at_both_ends() {
        for (net, len, name) in SPECIAL_V4 {
            let first = u32::from(Ipv4Addr::from(*net));
            let last = first | (u32::MAX.checked_shr(*len as u32).unwrap_or(0));
            let named = special_block(IpAddr::V4(Ipv4Addr::from(first)));
            assert_eq!(named, Some(*name), "first address of {name}");
            for ip in [first, last] {
                let ip = IpAddr::V4(Ipv4Addr::from(ip));
                assert!(!is_public(ip), "{ip} ({name})");
                // The IPv4-mapped form is judged as the IPv4 address.
                let mapped = IpAddr::V6(
                    Ipv4Addr::from(u32::from_be_bytes(match ip {
                        IpAddr::V4(v) => v.octets(),
                        _ => unreachable!(),
                    }))
                    .to_ipv6_mapped(),
                );
                assert!(!is_public(mapped), "{mapped}");
            }
        }
        for (net, len, name) in SPECIAL_V6 {
            let first = u128::from(Ipv6Addr::from(*net));
            let last = first | (u128::MAX.checked_shr(*len as u32).unwrap_or(0));
            for ip in [first, last] {
                let ip = IpAddr::V6(Ipv6Addr::from(ip));
                assert_eq!(special_block(ip), Some(*name), "{ip}");
            }
        }
        for public in [
            "1.0.0.0",
            "9.255.255.255",
            "11.0.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "126.255.255.255",
            "128.0.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.0",
            "192.0.3.0",
            "192.167.255.255",
            "192.169.0.0",
            "198.17.255.255",
            "198.20.0.0",
            "223.255.255.255",
            "2001:200::1",
            "2003::1",
            "2606:4700:4700::1111",
            "3ffe:ffff::1",
            "::ffff:8.8.8.8",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        for outside_global_unicast in [
            "::",
            "::1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::1",
            "100::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "feff::1",
            "ff02::1",
            "1fff:ffff::1",
            "4000::1",
        ] {
            assert!(
                !is_public(outside_global_unicast.parse().unwrap()),
                "{outside_global_unicast}"
            );
        }
        // 6to4 of 127.0.0.1 and Teredo: embedded IPv4 we cannot vouch for.
        assert!(!is_public("2002:7f00:1::1".parse().unwrap()));
        assert!(!is_public("2001:0:4136:e378::1".parse().unwrap()));
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
