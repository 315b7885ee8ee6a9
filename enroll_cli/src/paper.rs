//! Backup codes on paper: a one-page PDF (and the same as text) for the safe in the
//! server room. The PDF is written by hand: one page, the standard Helvetica and Courier
//! fonts (which every reader has, so nothing is embedded), boxes drawn as rectangles.
//! The page is 595 × 792 points, A4's width and Letter's height, so it prints unscaled
//! on either paper.

use std::fmt::Write as _;
use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use twofactor_core::clock::{Clock, SystemClock, format_utc};
use twofactor_core::enroll::host_name;
use zeroize::Zeroizing;

use crate::context::{Ctx, Error};
use crate::files;

/// What the sheet shows.
pub struct Sheet<'a> {
    /// The account the codes belong to.
    pub user: &'a str,
    /// The issuer, as the authenticator app shows it.
    pub issuer: &'a str,
    /// The host that made them.
    pub host: &'a str,
    /// When, `YYYY-MM-DD HH:MM:SS UTC`.
    pub made: &'a str,
    /// The codes, as the user types them.
    pub codes: &'a [Zeroizing<String>],
}

const WIDTH: u32 = 595;
const HEIGHT: u32 = 792;

/// The lines below the codes: how the codes work, and what to do without the phone.
const ADVICE: [&str; 6] = [
    "Each code works once. Making new codes voids all of these.",
    "Tick a box when you use its code.",
    "Lost or new phone: log in with one of these codes instead of the app's code,",
    "then run 'twofactor enroll --replace' to set up the new phone,",
    "and 'twofactor backup-codes' for a fresh sheet.",
    "No codes left and no phone: ask an administrator to reset your two-factor login.",
];

/// Text for a PDF string: printable ASCII only, with `\`, `(` and `)` escaped.
fn pdf_text(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' | '(' | ')' => {
                out.push('\\');
                out.push(c);
            }
            ' '..='~' => out.push(c),
            _ => out.push('?'),
        }
    }
    out
}

/// One line of text at (`x`, `y`) in `font` at `size` points.
fn show(c: &mut String, font: &str, size: u32, x: u32, y: u32, s: &str) {
    let _ = writeln!(c, "BT /{font} {size} Tf {x} {y} Td ({}) Tj ET", pdf_text(s));
}

/// The page's drawing operators.
fn content(sheet: &Sheet<'_>) -> Zeroizing<String> {
    let mut c = Zeroizing::new(String::new());
    show(
        &mut c,
        "F2",
        20,
        56,
        730,
        "Backup codes for two-factor login",
    );
    let facts = [
        ("Account:", sheet.user),
        ("Issuer:", sheet.issuer),
        ("Host:", sheet.host),
        ("Made:", sheet.made),
    ];
    for (i, (label, value)) in facts.into_iter().enumerate() {
        let y = 700 - u32::try_from(i).unwrap_or(0) * 16;
        show(&mut c, "F1", 11, 56, y, label);
        show(&mut c, "F2", 11, 110, y, value);
    }
    // Two columns of codes in large monospace, each with a box to tick on its left.
    let top = 600;
    let rows = sheet.codes.len().div_ceil(2).max(1);
    for (i, code) in sheet.codes.iter().enumerate() {
        let x = 56 + u32::try_from(i / rows).unwrap_or(0) * 250;
        let y = top - u32::try_from(i % rows).unwrap_or(0) * 40;
        let _ = writeln!(c, "1 w {x} {} 16 16 re S", y - 3);
        show(&mut c, "F3", 20, x + 30, y, code);
    }
    let below = top - u32::try_from(rows).unwrap_or(0) * 40 - 20;
    for (i, line) in ADVICE.iter().enumerate() {
        let font = if i == 0 { "F2" } else { "F1" };
        show(
            &mut c,
            font,
            11,
            56,
            below - u32::try_from(i).unwrap_or(0) * 16,
            line,
        );
    }
    c
}

/// The sheet as a one-page PDF.
pub fn pdf(sheet: &Sheet<'_>) -> Zeroizing<Vec<u8>> {
    let stream = content(sheet);
    let objects = [
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        "<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_string(),
        format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {WIDTH} {HEIGHT}] \
             /Resources << /Font << /F1 5 0 R /F2 6 0 R /F3 7 0 R >> >> /Contents 4 0 R >>"
        ),
        format!(
            "<< /Length {} >>\nstream\n{}endstream",
            stream.len(),
            stream.as_str()
        ),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>"
            .to_string(),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica-Bold /Encoding /WinAnsiEncoding >>"
            .to_string(),
        "<< /Type /Font /Subtype /Type1 /BaseFont /Courier-Bold /Encoding /WinAnsiEncoding >>"
            .to_string(),
    ];
    let objects = Zeroizing::new(objects);
    let mut out = Zeroizing::new(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n".to_vec());
    let mut offsets = Vec::with_capacity(objects.len());
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n{body}\nendobj\n", i + 1).as_bytes());
    }
    let xref = out.len();
    let mut table = format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1);
    for o in &offsets {
        let _ = writeln!(table, "{o:010} 00000 n ");
    }
    let _ = write!(
        table,
        "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
        objects.len() + 1
    );
    out.extend_from_slice(table.as_bytes());
    out
}

/// The same sheet as plain text.
pub fn text(sheet: &Sheet<'_>) -> Zeroizing<String> {
    let mut t = Zeroizing::new(String::new());
    let _ = writeln!(t, "Backup codes for two-factor login\n");
    let _ = writeln!(t, "Account:  {}", sheet.user);
    let _ = writeln!(t, "Issuer:   {}", sheet.issuer);
    let _ = writeln!(t, "Host:     {}", sheet.host);
    let _ = writeln!(t, "Made:     {}\n", sheet.made);
    for code in sheet.codes {
        let _ = writeln!(t, "[ ]  {}", code.as_str());
    }
    t.push('\n');
    for line in ADVICE {
        let _ = writeln!(t, "{line}");
    }
    t
}

/// Output files for a sheet, created as the caller before anything changes, so that a
/// path that cannot be written stops the command while the old codes still work.
pub struct Sheets {
    pdf: Option<(PathBuf, File)>,
    txt: Option<(PathBuf, File)>,
}

impl Sheets {
    /// Creates the files `--pdf` and `--txt` name (either may be absent).
    pub fn create(pdf: Option<&Path>, txt: Option<&Path>) -> Result<Self, Error> {
        let open = |p: &Path| {
            files::create_private(p)
                .map(|f| (p.to_path_buf(), f))
                .map_err(|e| {
                    Error(format!(
                        "cannot write {}: {e}; nothing was changed",
                        p.display()
                    ))
                })
        };
        Ok(Self {
            pdf: pdf.map(open).transpose()?,
            txt: txt.map(open).transpose()?,
        })
    }

    /// Writes `codes`, just saved for `user`, into the files.
    pub fn write(
        mut self,
        ctx: &Ctx,
        user: &str,
        codes: &[Zeroizing<String>],
    ) -> Result<(), Error> {
        let (pdf_out, txt_out) = (self.pdf.take(), self.txt.take());
        if pdf_out.is_none() && txt_out.is_none() {
            return Ok(());
        }
        let host = host_name();
        let issuer = ctx
            .config
            .enroll
            .issuer
            .clone()
            .unwrap_or_else(|| host.clone());
        let made = format_utc(SystemClock.now());
        let sheet = Sheet {
            user,
            issuer: &issuer,
            host: &host,
            made: &made,
            codes,
        };
        let fill = |(path, mut file): (PathBuf, File), bytes: &[u8]| {
            file.write_all(bytes)
                .and_then(|()| file.sync_all())
                .map_err(|e| {
                    Error(format!(
                        "the new backup codes are in force (shown above), but writing {} failed: {e}",
                        path.display()
                    ))
                })?;
            eprintln!("Wrote the backup codes to {}.", path.display());
            Ok::<(), Error>(())
        };
        if let Some(out) = pdf_out {
            fill(out, &pdf(&sheet))?;
        }
        if let Some(out) = txt_out {
            fill(out, text(&sheet).as_bytes())?;
        }
        Ok(())
    }
}

impl Drop for Sheets {
    /// Files made for codes that never came (a wrong code, an error) are removed again.
    fn drop(&mut self) {
        for (path, _) in self.pdf.take().into_iter().chain(self.txt.take()) {
            let _ = files::as_caller(|| std::fs::remove_file(&path));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sheet(codes: &[Zeroizing<String>]) -> Sheet<'_> {
        Sheet {
            user: "alice",
            issuer: "Acme (prod)",
            host: "web1",
            made: "2026-11-23 20:00:00 UTC",
            codes,
        }
    }

    fn codes() -> Vec<Zeroizing<String>> {
        (0..10)
            .map(|i| Zeroizing::new(format!("abcd{i}-efgh{i}")))
            .collect()
    }

    #[test]
    fn every_cross_reference_points_at_its_object() {
        let codes = codes();
        let pdf = pdf(&sheet(&codes));
        // Byte for byte (the header's binary marker becomes '?'), so offsets hold.
        let text: String = pdf
            .iter()
            .map(|&b| if b.is_ascii() { char::from(b) } else { '?' })
            .collect();
        let xref: usize = text
            .rsplit("startxref\n")
            .next()
            .and_then(|t| t.lines().next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert!(text[xref..].starts_with("xref\n0 8\n"), "{}", &text[xref..]);
        for (i, line) in text[xref..].lines().skip(3).take(7).enumerate() {
            let at: usize = line[..10].parse().unwrap();
            assert!(
                pdf[at..].starts_with(format!("{} 0 obj", i + 1).as_bytes()),
                "object {}",
                i + 1
            );
        }
        let length: usize = text
            .split("/Length ")
            .nth(1)
            .and_then(|t| t.split(' ').next())
            .and_then(|n| n.parse().ok())
            .unwrap();
        let start = text.find("stream\n").unwrap() + "stream\n".len();
        assert!(text[start + length..].starts_with("endstream"));
    }

    #[test]
    fn the_sheet_shows_every_code_a_box_each_and_what_to_do() {
        let codes = codes();
        let pdf = pdf(&sheet(&codes));
        let text = String::from_utf8_lossy(&pdf);
        for c in &codes {
            assert!(text.contains(&format!("({}) Tj", c.as_str())));
        }
        assert_eq!(text.matches(" re S").count(), codes.len());
        assert!(text.contains("(Acme \\(prod\\)) Tj"), "parentheses escaped");
        assert!(text.contains("voids all of these"));
        let plain = super::text(&sheet(&codes));
        assert!(plain.contains("[ ]  abcd0-efgh0"));
        assert!(plain.contains("Account:  alice"));
    }

    #[test]
    fn text_outside_printable_ascii_cannot_break_the_page() {
        assert_eq!(pdf_text("a(b)c\\d"), "a\\(b\\)c\\\\d");
        assert_eq!(pdf_text("ünï\ncode"), "?n??code");
    }
}
