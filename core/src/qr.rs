//! QR codes for terminals: unicode half blocks (two module rows per text line) or plain
//! ASCII, with a quiet zone, sized to fit an 80-column terminal.

use qrcode::{Color, EcLevel, QrCode};

/// How to draw a QR code in text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QrStyle {
    /// `▀ ▄ █`: square modules, half the height. Needs a UTF-8 locale on the client.
    #[default]
    Unicode,
    /// `##` per module: survives any locale, but twice as wide and tall.
    Ascii,
    /// No picture; the key and URI alone.
    None,
}

/// Quiet-zone modules on each side. The standard asks for 4; scanners read 2 fine and
/// it keeps larger codes inside 80 columns.
const QUIET: usize = 2;

/// Terminal columns the drawing must fit.
const COLUMNS: usize = 80;

/// Draws `data` as text lines, or `None` for [`QrStyle::None`] or data too long for a
/// QR code. Light modules are drawn as ink, which suits the usual light-on-dark
/// terminal; `invert` draws the dark modules instead, for dark-on-light terminals.
pub fn render(data: &str, style: QrStyle, invert: bool) -> Option<String> {
    if style == QrStyle::None {
        return None;
    }
    let code = QrCode::with_error_correction_level(data.as_bytes(), EcLevel::L).ok()?;
    let width = code.width();
    let colors = code.to_colors();
    // ASCII takes two columns a module: a version-5 code (a typical account's URI) with
    // two quiet modules a side would need 82. One still scans, and keeps it within 80.
    let quiet = if style == QrStyle::Ascii && (width + 2 * QUIET) * 2 > COLUMNS {
        1
    } else {
        QUIET
    };
    let size = width + 2 * quiet;
    // Light means "draw ink"; everything outside the symbol is the (light) quiet zone.
    let light = |x: usize, y: usize| -> bool {
        let is_light = x < quiet
            || y < quiet
            || x >= width + quiet
            || y >= width + quiet
            || colors[(y - quiet) * width + (x - quiet)] == Color::Light;
        is_light != invert
    };
    let mut out = String::new();
    match style {
        QrStyle::Unicode => {
            for y in (0..size).step_by(2) {
                for x in 0..size {
                    let top = light(x, y);
                    let bottom = y + 1 < size && light(x, y + 1);
                    out.push(match (top, bottom) {
                        (true, true) => '█',
                        (true, false) => '▀',
                        (false, true) => '▄',
                        (false, false) => ' ',
                    });
                }
                out.push('\n');
            }
        }
        QrStyle::Ascii => {
            for y in 0..size {
                for x in 0..size {
                    out.push_str(if light(x, y) { "##" } else { "  " });
                }
                out.push('\n');
            }
        }
        QrStyle::None => return None,
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const URI: &str = "otpauth://totp/build-server-01.example.com:alice%40build-server-01.example.com?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=build-server-01.example.com&algorithm=SHA1&digits=6&period=30";

    #[test]
    fn unicode_fits_80_columns_with_quiet_zone() {
        let text = render(URI, QrStyle::Unicode, false).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        let width = lines[0].chars().count();
        assert!(width <= 80, "{width} columns");
        assert!(lines.iter().all(|l| l.chars().count() == width));
        assert!(
            lines[0].chars().all(|c| c == '█'),
            "top quiet zone is solid"
        );
        let (last, body) = lines.split_last().unwrap();
        assert!(
            body.iter().all(|l| l.starts_with('█') && l.ends_with('█')),
            "side quiet zones"
        );
        assert!(
            last.chars().all(|c| c == '█' || c == '▀'),
            "bottom quiet zone"
        );
        assert!(lines.len() <= width / 2 + 1, "half-height rows");
    }

    #[test]
    fn decodes_back_to_the_same_matrix() {
        // Rebuild the module matrix from the drawing and compare with the encoder's.
        let code = QrCode::with_error_correction_level(URI.as_bytes(), EcLevel::L).unwrap();
        let w = code.width();
        let text = render(URI, QrStyle::Ascii, false).unwrap();
        let rows: Vec<Vec<bool>> = text
            .lines()
            .map(|l| l.as_bytes().chunks(2).map(|c| c == b"##").collect())
            .collect();
        let quiet = (rows.len() - w) / 2;
        assert!(quiet >= 1 && rows.len() == w + 2 * quiet);
        for y in 0..w {
            for x in 0..w {
                let dark = code[(x, y)] == Color::Dark;
                assert_eq!(!rows[y + quiet][x + quiet], dark, "module {x},{y}");
            }
        }
    }

    /// The demo account's URI (a version-5 code): unicode in 21 rows, ASCII within 80
    /// columns, one row a module.
    #[test]
    fn a_typical_account_fits_80_columns_in_both_styles() {
        let uri = "otpauth://totp/twofactor%20demo:demo?secret=JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP&issuer=twofactor%20demo";
        let unicode = render(uri, QrStyle::Unicode, false).unwrap();
        assert_eq!(unicode.lines().count(), 21);
        let ascii = render(uri, QrStyle::Ascii, false).unwrap();
        let width = ascii.lines().map(str::len).max().unwrap();
        assert!(width <= 80, "{width} columns");
        assert_eq!(ascii.lines().count(), width / 2);
    }

    #[test]
    fn invert_swaps_ink_and_paper() {
        let normal = render(URI, QrStyle::Ascii, false).unwrap();
        let inverted = render(URI, QrStyle::Ascii, true).unwrap();
        for (a, b) in normal.lines().zip(inverted.lines()) {
            for (x, y) in a.as_bytes().chunks(2).zip(b.as_bytes().chunks(2)) {
                assert_ne!(x, y);
            }
        }
    }

    #[test]
    fn none_draws_nothing() {
        assert_eq!(render(URI, QrStyle::None, false), None);
        assert!(
            render(&"x".repeat(5000), QrStyle::Unicode, false).is_none(),
            "too long for any QR version"
        );
    }
}
