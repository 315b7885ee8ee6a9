//! Module arguments from the PAM stack line: `config=PATH`, `debug` and `split`, nothing
//! else.
//! One parser for the module and for `twofactor doctor`, so doctor flags exactly what
//! the module refuses.

use std::path::PathBuf;

/// Parsed module arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleArgs {
    /// Config file; `/etc/twofactor/config.toml` unless `config=` says otherwise.
    pub config: PathBuf,
    /// Extra syslog lines at LOG_DEBUG.
    pub debug: bool,
    /// The first line of the one-prompt layout: ask "Password and code: ", keep the code
    /// aside for the checking line and hand the password on as PAM_AUTHTOK.
    pub split: bool,
}

impl ModuleArgs {
    /// Parses the arguments; any unknown or malformed one is an error, so a typo in a
    /// PAM stack fails closed instead of being silently ignored.
    pub fn parse<'a>(args: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut parsed = Self {
            config: PathBuf::from(crate::DEFAULT_CONFIG_PATH),
            debug: false,
            split: false,
        };
        let mut seen_config = false;
        for arg in args {
            if arg == "debug" {
                parsed.debug = true;
            } else if arg == "split" {
                parsed.split = true;
            } else if let Some(path) = arg.strip_prefix("config=") {
                if seen_config {
                    return Err("config= given twice".into());
                }
                if !path.starts_with('/') {
                    return Err(format!("config={path}: the path must be absolute"));
                }
                parsed.config = PathBuf::from(path);
                seen_config = true;
            } else {
                return Err(format!(
                    "unknown module argument {arg:?} (known: config=PATH, debug, split)"
                ));
            }
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_arguments() {
        assert_eq!(
            ModuleArgs::parse([]).unwrap(),
            ModuleArgs {
                config: PathBuf::from("/etc/twofactor/config.toml"),
                debug: false,
                split: false,
            }
        );
        assert_eq!(
            ModuleArgs::parse(["debug", "config=/etc/tf.toml"]).unwrap(),
            ModuleArgs {
                config: PathBuf::from("/etc/tf.toml"),
                debug: true,
                split: false,
            }
        );
        assert!(ModuleArgs::parse(["split"]).unwrap().split);
    }

    #[test]
    fn unknown_or_bad_arguments_fail() {
        for bad in [
            &["nullok"][..],
            &["config=relative.toml"],
            &["config=/a", "config=/b"],
            &["Debug"],
            &["split=yes"],
            &["forward_pass"],
            &["config"],
        ] {
            assert!(ModuleArgs::parse(bad.iter().copied()).is_err(), "{bad:?}");
        }
    }
}
