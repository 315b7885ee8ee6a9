//! `twofactor enroll`: a new authenticator, saved only once a code from it verifies.

use serde_json::json;
use twofactor_core::backend::{AuthenticatorId, Authority, Backend, BackendError, Enrolled};
use twofactor_core::enroll::{Enrollment, SaveSettings, host_name, issuer_for};
use twofactor_core::qr::QrStyle;
use twofactor_core::random::OsRandom;
use zeroize::Zeroizing;

use crate::cli::EnrollArgs;
use crate::context::{Ctx, Error, print_json};
use crate::paper::Sheets;
use crate::{files, prompt};

/// Tries at the confirmation code.
const TRIES: usize = 3;

pub fn run(ctx: &Ctx, args: &EnrollArgs) -> Result<(), Error> {
    let user = ctx.target(args.user.user.as_deref())?;
    if args.no_verify {
        ctx.require_root("--no-verify")?;
    }
    let backend = ctx.backend_for_change()?;
    let state = backend.facts(&user)?;
    match (state.is_enrolled(), args.replace) {
        (true, false) => {
            return Err(Error(format!(
                "{user} already has an authenticator. To move to a new phone run 'twofactor enroll --replace'; \
                 to remove it run 'twofactor disable --remove'"
            )));
        }
        (false, true) => {
            return Err(Error(format!(
                "{user} has no authenticator to replace; run 'twofactor enroll'"
            )));
        }
        _ => {}
    }
    let authority = ctx.confirm(&*backend, &state, args.replace)?;
    // What the change was confirmed against: saving re-checks it under the lock, so an
    // authenticator set up meanwhile (another login, an admin) is never overwritten.
    let expected = state.authenticator_id();

    let issuer = issuer_for(&ctx.config, &*backend, &host_name())?;
    let enrollment = Enrollment::new(&ctx.config, &user, &issuer, &mut OsRandom)?;
    let uri = enrollment.otpauth_uri();
    let sheets = Sheets::create(args.paper.pdf.as_deref(), None)?;
    if let Some(path) = &args.qr_png {
        files::write_private(path, &files::qr_png(&uri)?)
            .map_err(|e| Error(format!("cannot write {}: {e}", path.display())))?;
    }
    if let Some(path) = &args.qr_svg {
        files::write_private(path, files::qr_svg(&uri)?.as_bytes())
            .map_err(|e| Error(format!("cannot write {}: {e}", path.display())))?;
    }

    let settings = SaveSettings {
        window: ctx.config.totp.window,
        backup_codes: ctx.config.backup_codes.count,
    };
    let codes = if args.no_verify {
        save(
            &enrollment,
            &*backend,
            &user,
            None,
            expected,
            authority,
            settings,
        )?
        .saved()
        .ok_or_else(|| Error("internal error: provisioning needs no code".into()))?
        .0
    } else {
        // With --json the conversation goes to stderr so stdout stays one JSON document.
        let text = explain_enrollment(
            &enrollment,
            if args.invert { Invert::Yes } else { Invert::No },
        );
        if ctx.json {
            eprintln!("{text}")
        } else {
            println!("{text}")
        }
        confirm_code(&*backend, &enrollment, &user, expected, authority, settings)?
    };
    ctx.audit(
        &user,
        if args.replace {
            "replace authenticator"
        } else {
            "enroll"
        },
    );

    if ctx.json {
        print_json(&json!({
            "user": user,
            "secret": &*enrollment.secret().to_base32(),
            "otpauth_uri": &*uri,
            "backup_codes": codes.iter().map(|c| c.as_str()).collect::<Vec<_>>(),
        }))?;
        return sheets.write(ctx, &user, &codes);
    }
    if args.no_verify {
        println!("Provisioned an authenticator for {user} without a code.");
        println!("Key: {}", &*enrollment.secret().to_base32_grouped());
        println!("URI: {}", &*uri);
    } else if args.replace {
        println!("Your new authenticator is set up; the old one no longer works.");
    } else {
        println!("Your authenticator is set up. From now on, logins ask for a code from it.");
    }
    print_backup_codes(&codes);
    sheets.write(ctx, &user, &codes)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Invert {
    Yes,
    No,
}

/// What to scan or type, as the login shows it.
fn explain_enrollment(e: &Enrollment, invert: Invert) -> String {
    let mut t = String::from(
        "Add this account to an authenticator app (Google Authenticator, Microsoft\n\
         Authenticator, FreeOTP, ...): scan the QR code below, or type the key under it.\n\
         If the picture looks garbled, type the key (or try --invert on a light terminal).\n\n",
    );
    // The QR code, the key and then the prompt come last, and fit an 80x24 screen.
    t.push_str(
        e.scan_or_type(QrStyle::Unicode, invert == Invert::Yes)
            .trim_end(),
    );
    t
}

/// Saves the enrollment through core, with the command's wording for a lost race.
fn save(
    e: &Enrollment,
    backend: &dyn Backend,
    user: &str,
    code: Option<&str>,
    expected: Option<&AuthenticatorId>,
    authority: Option<Authority>,
    settings: SaveSettings,
) -> Result<Enrolled, Error> {
    match backend.enroll(user, e, code, expected, authority, settings, &mut OsRandom) {
        Ok(enrolled) => Ok(enrolled),
        Err(BackendError::Changed(_)) => Err(Error(format!(
            "the authenticator of {user} was changed while this command ran (another login or an administrator); nothing was saved. Run 'twofactor status' and start again"
        ))),
        Err(e) => Err(Error(e.to_string())),
    }
}

/// Asks for the first code and saves the authenticator (and fresh backup codes) only
/// when it verifies; until then any old authenticator stays in force.
fn confirm_code(
    backend: &dyn Backend,
    e: &Enrollment,
    user: &str,
    expected: Option<&AuthenticatorId>,
    mut authority: Option<Authority>,
    settings: SaveSettings,
) -> Result<Vec<Zeroizing<String>>, Error> {
    for attempt in 1..=TRIES {
        let Some(code) = prompt::read_hidden("Code from the app: ")? else {
            return Err(
                "no code entered; nothing was saved. Run 'twofactor enroll' again to start over"
                    .into(),
            );
        };
        // A mistyped code saves nothing and hands the authority back for the retry.
        match save(
            e,
            backend,
            user,
            Some(&code),
            expected,
            authority.take(),
            settings,
        )? {
            Enrolled::Saved(codes) => return Ok(codes.0),
            Enrolled::Mismatch(back) if attempt < TRIES => {
                authority = back;
                eprintln!(
                    "That code does not match. Check that the phone sets its time automatically, then enter the next code."
                );
            }
            Enrolled::Mismatch(_) => {}
        }
    }
    Err("the codes did not match; nothing was saved. Check the phone's clock and run 'twofactor enroll' again".into())
}

/// Shows new backup codes, two per line, with what to do with them.
pub fn print_backup_codes(codes: &[Zeroizing<String>]) {
    if codes.is_empty() {
        return;
    }
    println!("\nBackup codes: each one lets you log in once if you lose your phone.");
    println!("Save them somewhere safe now; they are not shown again.\n");
    for pair in codes.chunks(2) {
        let line: Vec<&str> = pair.iter().map(|c| c.as_str()).collect();
        println!("    {}", line.join("    "));
    }
}
