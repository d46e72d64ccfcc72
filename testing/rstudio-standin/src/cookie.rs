//! The signed `user-id` cookie: `<user>|<expiry>|<HMAC-SHA256 hex>`, keyed by the secure cookie
//! key, with the expiry as a percent-encoded HTTP date as RStudio writes it.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::http::{percent_decode, percent_encode};
use crate::sys;

/// Name of the cookie that carries the signed-in user.
pub const USER_COOKIE: &str = "user-id";

fn mac(key: &[u8], user: &str, expiry: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so new_from_slice cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(user.as_bytes());
    mac.update(b"|");
    mac.update(expiry.as_bytes());
    mac
}

/// Returns the cookie value for `user`, valid until `expires` (seconds since the epoch).
pub fn sign(key: &[u8], user: &str, expires: i64) -> String {
    let expiry = sys::http_date(expires);
    let signature = sys::hex(&mac(key, user, &expiry).finalize().into_bytes());
    format!("{user}|{}|{signature}", percent_encode(&expiry))
}

/// Returns the user named by a cookie value when its signature matches `key` and it has not
/// expired at `now`.
pub fn verify(key: &[u8], value: &str, now: i64) -> Option<String> {
    let mut parts = value.splitn(3, '|');
    let (user, expiry, signature) = (parts.next()?, parts.next()?, parts.next()?);
    let user = percent_decode(user);
    let expiry = percent_decode(expiry);
    if user.is_empty() || sys::parse_http_date(&expiry)? <= now {
        return None;
    }
    let signature = decode_hex(signature)?;
    mac(key, &user, &expiry).verify_slice(&signature).ok()?;
    Some(user)
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(text.get(at..at + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_cookie_verifies_until_it_expires() {
        let key = b"0123456789abcdef";
        let value = sign(key, "alice", 2_000_000_000);
        assert!(value.starts_with("alice|"), "{value}");
        assert_eq!(verify(key, &value, 1_900_000_000).as_deref(), Some("alice"));
        assert_eq!(verify(key, &value, 2_000_000_001), None, "expired");
        assert_eq!(
            verify(b"another key", &value, 1_900_000_000),
            None,
            "wrong key"
        );
        let forged = value.replacen("alice", "bob", 1);
        assert_eq!(verify(key, &forged, 1_900_000_000), None, "changed user");
        assert_eq!(verify(key, "garbage", 0), None);
    }
}
