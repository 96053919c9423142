//! Feeds arbitrary bytes to the TokenReview decoder, as the webhook receives them.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ram_authenticator::review;

fuzz_target!(|data: &[u8]| {
    match review::decode(data) {
        Ok(r) => {
            assert!(!r.token.is_empty());
            let _ = review::audiences(&r.audiences, &["api".to_string()]);
            let _ = review::encode_deny(r.api_version, "denied");
        }
        Err(e) => {
            let _ = e.to_string();
        }
    }
});
