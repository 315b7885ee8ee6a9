//! Fuzz target: what a user can type at the code prompt, checked against an enrolled
//! state (TOTP, replay, backup codes, lockout), as the module does at login.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use twofactor_core::auth::apply_code;
use twofactor_core::backup_codes::{BackupCodes, HashCost};
use twofactor_core::config::Config;
use twofactor_core::enroll::Enrollment;
use twofactor_core::random::SeededRandom;
use twofactor_core::store::UserState;

fn enrolled() -> &'static UserState {
    static STATE: OnceLock<UserState> = OnceLock::new();
    STATE.get_or_init(|| {
        let config = Config::default();
        let mut rng = SeededRandom::new(7);
        let mut state = UserState::default();
        Enrollment::new(&config, "u", "h", &mut rng).unwrap().install(&mut state, 0, None);
        let cheap = HashCost { m_kib: 8, t: 1, p: 1 };
        state.backup_codes = Some(BackupCodes::from_existing(&["12345678", "0123456789"], cheap, &mut rng).unwrap());
        state
    })
}

fuzz_target!(|data: &[u8]| {
    let input = String::from_utf8_lossy(data);
    let mut state = enrolled().clone();
    let config = Config::default();
    let _ = twofactor_core::totp::normalize(&input);
    let _ = twofactor_core::backup_codes::normalize(&input);
    let _ = apply_code(&mut state, &input, &config, 1_800_000_000);
});
