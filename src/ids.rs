//! Typed, prefixed ids (`job_`, `gen_`, `evt_`, `del_`, `upl_`) and the other random strings the
//! server hands out: trace ids, media tokens, API keys and the webhook secret.

use std::sync::Mutex;

use base64::Engine as _;
use rand::distributions::Alphanumeric;
use rand::{Rng, RngCore};

/// ULIDs from one monotonic generator, so ids made in the same millisecond still sort in order
/// of creation (queues claim "oldest first" by id).
static ULIDS: Mutex<Option<ulid::Generator>> = Mutex::new(None);

/// `prefix` + `_` + a ULID (26 Crockford base32 characters).
pub fn new_id(prefix: &str) -> String {
    let mut guard = ULIDS.lock().unwrap_or_else(|p| p.into_inner());
    let generator = guard.get_or_insert_with(ulid::Generator::new);
    let id = generator.generate().unwrap_or_else(|_| ulid::Ulid::new());
    format!("{prefix}_{id}")
}

/// Whether `id` has the form [`new_id`] gives it: `prefix` + `_` + a ULID.
pub fn is_id(id: &str, prefix: &str) -> bool {
    id.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|u| {
            u.len() == 26
                && !u.bytes().any(|b| b.is_ascii_lowercase())
                && ulid::Ulid::from_string(u).is_ok()
        })
}

/// A short unique trace id, e.g. `sc-3f9a0c1b7d2e` (48 random bits).
pub fn trace_id() -> String {
    format!(
        "sc-{:012x}",
        rand::thread_rng().next_u64() & 0xffff_ffff_ffff
    )
}

/// An unguessable URL token for a published file (128 random bits, URL-safe).
pub fn media_token() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// `prefix` + 24 base62 characters: the API key format (docs/decisions.md).
pub fn api_key(prefix: &str) -> String {
    let tail: String = rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(24)
        .map(char::from)
        .collect();
    format!("{prefix}{tail}")
}

/// `whsec_` + base64 of 32 random bytes: the webhook secret format (docs/decisions.md).
pub fn webhook_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// Checks the shape of an API key: `prefix` followed by exactly 24 base62 characters.
pub fn is_api_key(key: &str, prefix: &str) -> bool {
    key.strip_prefix(prefix)
        .is_some_and(|t| t.len() == 24 && t.bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_have_their_prefix_and_sort_in_creation_order() {
        let ids: Vec<String> = (0..1000).map(|_| new_id("job")).collect();
        assert!(ids
            .iter()
            .all(|id| id.starts_with("job_") && id.len() == 4 + 26));
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn keys_and_secrets_follow_the_contract() {
        let job = new_id("job");
        assert!(is_id(&job, "job") && !is_id(&job, "gen"), "{job}");
        for bad in [
            "",
            "job_",
            "nope",
            "job_01ARZ3NDEKTSV4RRFFQ69G5FA",
            "job_01ARZ3NDEKTSV4RRFFQ69G5FAU",
        ] {
            assert!(!is_id(bad, "job"), "{bad}");
        }
        let ft = api_key("ft_test_");
        assert!(is_api_key(&ft, "ft_test_"), "{ft}");
        assert!(!is_api_key(&ft, "tl_test_"));
        let secret = webhook_secret();
        let raw = base64::engine::general_purpose::STANDARD
            .decode(secret.strip_prefix("whsec_").unwrap())
            .unwrap();
        assert_eq!(raw.len(), 32);
    }
}
