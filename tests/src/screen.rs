//! A real terminal of a fixed size (a tmux pane with no status line) to run a program
//! in and read back what is on screen, and a QR code read off that screen: the text is
//! turned back into an image and decoded by zbarimg, as a phone would see the screen.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

/// A program running in a tmux pane of `columns` x `rows`; the tmux server is private to
/// the screen and killed when it is dropped.
#[derive(Debug)]
pub struct Screen {
    dir: tempfile::TempDir,
}

impl Screen {
    /// Starts `command` (a shell command line) in a `columns` x `rows` pane, in a UTF-8
    /// locale, as a person's terminal would run it.
    pub fn start(columns: u16, rows: u16, command: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        // No status line, so the pane is the whole screen; the pane stays after the program
        // exits, so its last words can still be read.
        fs::write(
            dir.path().join("tmux.conf"),
            "set -g status off\nset -g remain-on-exit on\n",
        )
        .unwrap();
        let screen = Self { dir };
        let out = screen
            .tmux()
            .args(["new-session", "-d", "-x", &columns.to_string()])
            .args(["-y", &rows.to_string(), command])
            .output()
            .expect("tmux must be installed (tests/setup)");
        assert!(
            out.status.success(),
            "tmux: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        screen
    }

    fn tmux(&self) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-u")
            .arg("-S")
            .arg(self.dir.path().join("socket"))
            .arg("-f")
            .arg(self.dir.path().join("tmux.conf"))
            .env("LC_ALL", "C.UTF-8")
            .env("TERM", "xterm-256color")
            .env_remove("TMUX");
        c
    }

    /// What the pane shows now, one string per row (tmux leaves out trailing spaces,
    /// so a prompt such as "Code: " reads "Code:").
    pub fn capture(&self) -> Vec<String> {
        let out = self
            .tmux()
            .args(["capture-pane", "-p", "-t", "0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// The pane's whole text, scrollback included: unlike the screen, it only grows, so
    /// a count of a prompt in it tells a new prompt from one already shown.
    pub fn history(&self) -> String {
        let out = self
            .tmux()
            .args(["capture-pane", "-p", "-S", "-", "-t", "0"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Types `command` until `answer` shows: what is typed before a new shell reads its
    /// terminal (after login or sudo hands over) can be dropped. Returns the screen.
    pub fn type_until(&self, command: &str, answer: &str) -> Vec<String> {
        for _ in 0..20 {
            self.type_line(command);
            thread::sleep(Duration::from_millis(500));
            if self.history().contains(answer) {
                break;
            }
        }
        self.wait_for(answer)
    }

    /// Waits until `needle` has been shown `count` times since the program started (a
    /// second prompt, not the first one still on screen); returns the screen then.
    pub fn wait_for_nth(&self, needle: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = self.history().matches(needle).count();
            if seen >= count {
                return self.capture();
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} showed {seen} times, never {count}; the screen:\n{}",
                self.capture().join("\n")
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits until `needle` is on screen; returns the screen then.
    pub fn wait_for(&self, needle: &str) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let shown = self.capture();
            if shown.iter().any(|l| l.contains(needle)) {
                return shown;
            }
            assert!(
                Instant::now() < deadline,
                "{needle:?} never showed; the screen:\n{}",
                shown.join("\n")
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Types `text` and Enter.
    pub fn type_line(&self, text: &str) {
        if !text.is_empty() {
            let out = self
                .tmux()
                .args(["send-keys", "-t", "0", "-l", text])
                .output()
                .unwrap();
            assert!(out.status.success());
        }
        self.tmux()
            .args(["send-keys", "-t", "0", "Enter"])
            .output()
            .unwrap();
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        let _ = self.tmux().arg("kill-server").output();
    }
}

/// Pixels per QR module in the image given to zbarimg.
const SCALE: usize = 6;
/// Terminal background around the text, in modules.
const MARGIN: usize = 6;

/// The QR code drawn in `rows` of a screen (unicode half blocks or `##` pairs), decoded
/// by zbarimg; `None` if there is none or it does not decode. Ink is drawn light and
/// blank cells dark, as on a terminal with light text on a dark background.
pub fn decode_qr(rows: &[String]) -> Option<String> {
    let unicode =
        |l: &str| !l.is_empty() && l.chars().all(|c| " █▀▄".contains(c)) && l.contains('█');
    let ascii =
        |l: &str| !l.is_empty() && l.chars().all(|c| c == '#' || c == ' ') && l.contains("##");
    let start = rows.iter().position(|l| unicode(l) || ascii(l))?;
    let is_ascii = ascii(&rows[start]);
    let block: Vec<&String> = rows[start..]
        .iter()
        .take_while(|l| if is_ascii { ascii(l) } else { unicode(l) })
        .collect();
    // Module rows, each a row of booleans: true where ink (light) is drawn.
    let mut modules: Vec<Vec<bool>> = Vec::new();
    for line in block {
        if is_ascii {
            let cells: Vec<char> = line.chars().collect();
            modules.push(
                cells
                    .chunks(2)
                    .map(|c| c.iter().all(|&x| x == '#'))
                    .collect(),
            );
        } else {
            let top = line.chars().map(|c| c == '█' || c == '▀').collect();
            let bottom = line.chars().map(|c| c == '█' || c == '▄').collect();
            modules.push(top);
            modules.push(bottom);
        }
    }
    let width = modules.iter().map(Vec::len).max()?;
    let (w, h) = (
        (width + 2 * MARGIN) * SCALE,
        (modules.len() + 2 * MARGIN) * SCALE,
    );
    let mut image = format!("P5\n{w} {h}\n255\n").into_bytes();
    for y in 0..h {
        for x in 0..w {
            let (my, mx) = (
                (y / SCALE).checked_sub(MARGIN),
                (x / SCALE).checked_sub(MARGIN),
            );
            let ink = match (my, mx) {
                (Some(my), Some(mx)) => modules
                    .get(my)
                    .and_then(|r| r.get(mx))
                    .copied()
                    .unwrap_or(false),
                _ => false,
            };
            image.push(if ink { 255 } else { 0 });
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("screen.pgm");
    fs::write(&path, image).unwrap();
    let out = Command::new("zbarimg")
        .args(["--raw", "-q"])
        .arg(&path)
        .output()
        .expect("zbarimg must be installed (tests/setup)");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Checks an enrollment screen at its code prompt, as an 80-column terminal shows it: the
/// prompt is the last row, the key the row above it, the whole QR code is above that
/// from its solid top row, and the QR code read off the screen decodes to the URI of
/// `user` under the issuer "twofactor demo". Returns the key and the QR code's rows.
pub fn check_setup_screen(shown: &[String], prompt: &str, user: &str) -> (String, usize) {
    let text = shown.join("\n");
    let last = shown.iter().rposition(|l| !l.trim().is_empty()).unwrap();
    assert!(
        shown[last].starts_with(prompt),
        "the prompt is the last row:\n{text}"
    );
    assert!(shown[last - 1].starts_with("Key:     "), "{text}");
    let top = shown
        .iter()
        .position(|l| !l.is_empty() && (l.chars().all(|c| c == '█') || l.chars().all(|c| c == '#')))
        .unwrap_or_else(|| panic!("no QR top row on screen:\n{text}"));
    let key: String = shown[last - 1]["Key:".len()..].split_whitespace().collect();
    let uri =
        format!("otpauth://totp/twofactor%20demo:{user}?secret={key}&issuer=twofactor%20demo");
    assert_eq!(decode_qr(shown).as_deref(), Some(uri.as_str()), "{text}");
    (key, last - 1 - top)
}
