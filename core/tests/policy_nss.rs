//! Policy decisions against the real name service, with users and groups made for the
//! test (so it runs as root) and removed afterwards.

#![allow(clippy::unwrap_used)] // a failed unwrap is a failed test

use twofactor_core::policy::{LookupError, Nss, Policy, Reason, Requirement};
use twofactor_testkit::{Accounts, tag};

fn req(required: bool, reason: Reason) -> Requirement {
    Requirement { required, reason }
}

#[test]
fn rules_and_combinations_with_real_groups() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test creates users and groups: run it as root"
    );
    let tag = tag();
    let mut acct = Accounts::default();
    let admins = acct.group(&format!("tfadm{tag}"));
    let devs = acct.group(&format!("tfdev{tag}"));
    let rescue = acct.group(&format!("tfres{tag}"));
    let plain = acct.group(&format!("tfusr{tag}"));
    // ann: primary admins; ben: supplementary devs; cat: devs and rescue; dan: neither.
    let ann = acct.user(&format!("tfann{tag}"), &admins, &[]);
    let ben = acct.user(&format!("tfben{tag}"), &plain, &[&devs]);
    let cat = acct.user(&format!("tfcat{tag}"), &plain, &[&devs, &rescue]);
    let dan = acct.user(&format!("tfdan{tag}"), &plain, &[]);
    let nss = Nss;
    let s = |v: &[&String]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();

    let by_group = Policy {
        groups: s(&[&admins, &devs]),
        ..Policy::default()
    };
    assert_eq!(
        by_group.requires(&ann, &nss).unwrap(),
        req(true, Reason::Group(admins.clone())),
        "primary group"
    );
    assert_eq!(
        by_group.requires(&ben, &nss).unwrap(),
        req(true, Reason::Group(devs.clone())),
        "supplementary group"
    );
    assert_eq!(
        by_group.requires(&dan, &nss).unwrap(),
        req(false, Reason::NoRule)
    );

    let with_exempt_group = Policy {
        exempt_groups: s(&[&rescue]),
        ..by_group.clone()
    };
    assert_eq!(
        with_exempt_group.requires(&cat, &nss).unwrap(),
        req(false, Reason::ExemptGroup(rescue.clone()))
    );
    assert_eq!(
        with_exempt_group.requires(&ben, &nss).unwrap(),
        req(true, Reason::Group(devs.clone()))
    );

    let everyone = Policy {
        all_users: true,
        exempt_users: s(&[&dan]),
        exempt_groups: s(&[&rescue]),
        ..Policy::default()
    };
    assert_eq!(
        everyone.requires(&ann, &nss).unwrap(),
        req(true, Reason::AllUsers)
    );
    assert_eq!(
        everyone.requires(&dan, &nss).unwrap(),
        req(false, Reason::ExemptUser)
    );
    assert_eq!(
        everyone.requires(&cat, &nss).unwrap(),
        req(false, Reason::ExemptGroup(rescue.clone()))
    );

    let listed = Policy {
        users: s(&[&dan]),
        exempt_groups: s(&[&admins]),
        ..Policy::default()
    };
    assert_eq!(
        listed.requires(&dan, &nss).unwrap(),
        req(true, Reason::UserList)
    );
    let listed_but_exempt = Policy {
        users: s(&[&ann]),
        exempt_groups: s(&[&admins]),
        ..Policy::default()
    };
    assert_eq!(
        listed_but_exempt.requires(&ann, &nss).unwrap(),
        req(false, Reason::ExemptGroup(admins.clone()))
    );

    let missing_group = Policy {
        groups: vec![format!("tfnone{tag}")],
        ..Policy::default()
    };
    assert_eq!(
        missing_group.requires(&ann, &nss).unwrap(),
        req(false, Reason::NoRule)
    );
    assert!(matches!(
        by_group.requires(&format!("tfghost{tag}"), &nss),
        Err(LookupError::UnknownUser(_))
    ));
}
