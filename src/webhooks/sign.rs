//! `X-TuneLab-Signature: t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`, keyed with the whole
//! `whsec_…` string as the seed's Flask receiver uses it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The header name, exactly as the seed writes it.
pub const HEADER: &str = "X-TuneLab-Signature";

/// Hex HMAC-SHA256 of `"<timestamp>.<body>"`.
pub fn hmac_hex(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

/// The full header value for a body signed at `timestamp`.
pub fn header_value(secret: &str, timestamp: i64, body: &[u8]) -> String {
    format!("t={timestamp},v1={}", hmac_hex(secret, timestamp, body))
}

/// Checks a header value against a body, in constant time, and that `t` is within `tolerance_secs`
/// of `now` (replay protection as the seed's receiver does it).
pub fn verify(secret: &str, header: &str, body: &[u8], now: i64, tolerance_secs: i64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<i64>().ok(),
            Some(("v1", v)) => v1 = hex::decode(v).ok(),
            _ => {}
        }
    }
    let (Some(t), Some(sig)) = (t, v1) else {
        return false;
    };
    if (now - t).abs() > tolerance_secs {
        return false;
    }
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_an_independent_hmac_vector() {
        // RFC 4231 test case 2 (key "Jefe"): the primitive under the signature is HMAC-SHA256.
        let mut mac = HmacSha256::new_from_slice(b"Jefe").unwrap();
        mac.update(b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(mac.finalize().into_bytes()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn header_verifies_and_detects_tampering_and_staleness() {
        let secret = "whsec_dGVzdA==";
        let body = br#"{"type":"job.completed"}"#;
        let h = header_value(secret, 1_712_678_400, body);
        assert!(h.starts_with("t=1712678400,v1="));
        assert_eq!(h.len(), "t=1712678400,v1=".len() + 64);
        assert!(verify(secret, &h, body, 1_712_678_400, 300));
        assert!(!verify(secret, &h, b"{}", 1_712_678_400, 300));
        assert!(!verify("whsec_other", &h, body, 1_712_678_400, 300));
        assert!(!verify(secret, &h, body, 1_712_678_400 + 301, 300));
    }
}
