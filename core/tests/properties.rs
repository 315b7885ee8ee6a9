//! Property tests: the config parser, the user-state parser, code normalisation and
//! policy resolution hold their rules for generated inputs, and never panic on junk.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use std::collections::{HashMap, HashSet};
use std::path::Path;

use proptest::prelude::*;
use twofactor_core::backup_codes;
use twofactor_core::config::Config;
use twofactor_core::policy::{Directory, LookupError, Policy, Reason};
use twofactor_core::store::{UserState, parse_state};
use twofactor_core::totp;

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn config_parser_never_panics(text in "\\PC{0,400}") {
        let _ = Config::parse(Path::new("/c.toml"), &text);
    }

    #[test]
    fn config_parser_never_panics_on_near_valid_toml(
        key in "[a-z_]{1,12}", value in "(-?[0-9]{1,6}|\"[a-zA-Z0-9:/ .]{0,10}\"|true|false|\\[\\])",
        table in "(enforce|enroll|totp|backup_codes|lockout|trusted_devices|storage|x)",
    ) {
        let text = format!("version = 1\n[{table}]\n{key} = {value}\n");
        if let Err(e) = Config::parse(Path::new("/c.toml"), &text) {
            // Every refusal points into the file.
            prop_assert!(e.to_string().starts_with("/c.toml:"), "{e}");
        }
    }

    #[test]
    fn valid_configs_mean_what_they_say(
        digits in prop_oneof![Just(6u8), Just(8u8)], period in 15u64..=300, window in 0u8..=10,
        count in 0usize..=100, max_failures in 1u32..=1000, lock in 1u64..=86_400,
        users in proptest::collection::vec("[a-z][a-z0-9_]{0,8}", 0..5),
    ) {
        let list = users.iter().map(|u| format!("{u:?}")).collect::<Vec<_>>().join(", ");
        let text = format!(
            "version = 1\n[enforce]\nusers = [{list}]\n[totp]\ndigits = {digits}\nperiod = {period}\nwindow = {window}\n\
             [backup_codes]\ncount = {count}\n[lockout]\nmax_failures = {max_failures}\nlock_seconds = {lock}\n"
        );
        let c = Config::parse(Path::new("/c.toml"), &text).unwrap();
        prop_assert_eq!(c.totp.params.digits, digits);
        prop_assert_eq!(c.totp.params.period, period);
        prop_assert_eq!(c.totp.window, window);
        prop_assert_eq!(c.backup_codes.count, count);
        prop_assert_eq!(c.lockout.max_failures, max_failures);
        prop_assert_eq!(c.lockout.lock_seconds, lock);
        prop_assert_eq!(c.policy.users.len(), users.iter().collect::<HashSet<_>>().len());
    }

    #[test]
    fn state_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        let _ = parse_state(Path::new("/s/u.json"), "u", &bytes);
    }

    #[test]
    fn state_round_trips(failures in 0u32..100, locks in 0u32..20, until in proptest::option::of(0u64..4_000_000_000), grace in 0u32..1000) {
        let mut s = UserState { grace_logins_used: grace, ..UserState::default() };
        s.lockout.failures = failures;
        s.lockout.locks = locks;
        s.lockout.locked_until = until;
        // The current format, and version 1, which is still read.
        for version in [1, 2] {
            let text = serde_json::json!({"version": version, "user": "u", "state": s_to_json(&s)}).to_string();
            prop_assert_eq!(parse_state(Path::new("/s/u.json"), "u", text.as_bytes()).unwrap(), s.clone());
        }
    }

    #[test]
    fn totp_input_ignores_spaces_and_dashes(code in "[0-9]{6}", seps in proptest::collection::vec(prop_oneof![Just(" "), Just("-"), Just("")], 7)) {
        let typed: String = code.chars().zip(&seps).flat_map(|(c, s)| format!("{s}{c}").chars().collect::<Vec<_>>()).collect::<String>() + seps[6];
        prop_assert_eq!(totp::normalize(&typed).to_string(), code);
    }

    #[test]
    fn backup_code_normalisation_is_idempotent_and_case_blind(input in "[0-9a-zA-Z -]{0,16}") {
        if let Some(once) = backup_codes::normalize(&input) {
            prop_assert_eq!(backup_codes::normalize(&once).unwrap().to_string(), once.to_string());
            prop_assert_eq!(backup_codes::normalize(&input.to_uppercase()).unwrap().to_string(), once.to_string());
        }
    }

    #[test]
    fn policy_resolution(
        all in any::<bool>(),
        member in proptest::collection::vec(any::<bool>(), 3),
        in_groups in proptest::collection::vec(any::<bool>(), 3),
        in_exempt_groups in proptest::collection::vec(any::<bool>(), 3),
        listed in any::<bool>(), exempt in any::<bool>(),
    ) {
        let groups = ["g0", "g1", "g2"];
        let pick = |mask: &[bool]| groups.iter().zip(mask).filter(|(_, m)| **m).map(|(g, _)| g.to_string()).collect::<Vec<_>>();
        let policy = Policy {
            all_users: all,
            groups: pick(&in_groups),
            users: if listed { vec!["u".into()] } else { vec![] },
            exempt_users: if exempt { vec!["u".into()] } else { vec![] },
            exempt_groups: pick(&in_exempt_groups),
            services: vec![],
            broken_file: None,
        };
        let dir = Fixed(groups.iter().zip(&member).filter(|(_, m)| **m).map(|(g, _)| g.to_string()).collect());
        let r = policy.requires("u", &dir).unwrap();
        let member_of = |list: &[String]| list.iter().any(|g| dir.0.contains(g));
        let is_exempt = exempt || member_of(&policy.exempt_groups);
        let expected = !is_exempt && (all || listed || member_of(&policy.groups));
        prop_assert_eq!(r.required, expected, "{:?}", r);
        if is_exempt {
            prop_assert!(matches!(r.reason, Reason::ExemptUser | Reason::ExemptGroup(_)));
        }
    }
}

fn s_to_json(s: &UserState) -> serde_json::Value {
    serde_json::to_value(s).unwrap()
}

/// User "u" belongs to these groups; group gN has gid N.
struct Fixed(Vec<String>);

impl Directory for Fixed {
    fn account(&self, typed: &str) -> Result<Option<String>, LookupError> {
        Ok(Some(typed.to_string()))
    }
    fn user_gids(&self, _: &str) -> Result<Vec<u32>, LookupError> {
        Ok(self.0.iter().map(|g| g[1..].parse().unwrap()).collect())
    }
    fn group_gid(&self, group: &str) -> Result<Option<u32>, LookupError> {
        let ids: HashMap<&str, u32> = HashMap::from([("g0", 0), ("g1", 1), ("g2", 2)]);
        Ok(ids.get(group).copied())
    }
}
