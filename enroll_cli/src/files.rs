//! Files the command writes for its caller (QR images, documentation): written with the
//! caller's own privileges, never through a symlink, readable only by the caller.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::libc;
use nix::unistd::{Gid, Uid, getegid, geteuid, getgid, getuid, setegid, seteuid};
use qrcode::{Color, EcLevel, QrCode};

/// Runs `f` with the effective uid and gid of the real user, then restores them.
pub fn as_caller<T>(f: impl FnOnce() -> io::Result<T>) -> io::Result<T> {
    let (euid, egid) = (geteuid(), getegid());
    let (ruid, rgid) = (getuid(), getgid());
    if euid == ruid && egid == rgid {
        return f();
    }
    setegid(rgid).map_err(io::Error::from)?;
    if let Err(e) = seteuid(ruid) {
        let _ = setegid(egid);
        return Err(e.into());
    }
    let result = f();
    restore(euid, egid)?;
    result
}

fn restore(euid: Uid, egid: Gid) -> io::Result<()> {
    seteuid(euid).map_err(io::Error::from)?;
    setegid(egid).map_err(io::Error::from)
}

/// Creates (or empties) `path` as the caller: mode 0600, no symlink followed. Writing
/// to the open file later needs no privilege.
pub fn create_private(path: &Path) -> io::Result<File> {
    as_caller(|| {
        OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NOCTTY)
            .open(path)
    })
}

/// Writes `bytes` to `path` as the caller: mode 0600, no symlink followed, replacing an
/// existing regular file.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = create_private(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

fn code(data: &str) -> io::Result<QrCode> {
    QrCode::with_error_correction_level(data.as_bytes(), EcLevel::M)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))
}

/// The QR code of `data` as a grayscale PNG: 8 pixels a module, a 4-module quiet zone.
pub fn qr_png(data: &str) -> io::Result<Vec<u8>> {
    const SCALE: usize = 8;
    const QUIET: usize = 4;
    let code = code(data)?;
    let w = code.width();
    let size = (w + 2 * QUIET) * SCALE;
    let colors = code.to_colors();
    let mut pixels = vec![255u8; size * size];
    for y in 0..w {
        for x in 0..w {
            if colors[y * w + x] == Color::Dark {
                for dy in 0..SCALE {
                    let row = ((y + QUIET) * SCALE + dy) * size;
                    let col = (x + QUIET) * SCALE;
                    pixels[row + col..row + col + SCALE].fill(0);
                }
            }
        }
    }
    let mut out = Vec::new();
    let side = u32::try_from(size).map_err(|_| io::Error::other("QR code too large"))?;
    let mut encoder = png::Encoder::new(&mut out, side, side);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().map_err(io::Error::other)?;
    writer.write_image_data(&pixels).map_err(io::Error::other)?;
    writer.finish().map_err(io::Error::other)?;
    Ok(out)
}

/// The QR code of `data` as an SVG document.
pub fn qr_svg(data: &str) -> io::Result<String> {
    let code = code(data)?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(256, 256)
        .quiet_zone(true)
        .build())
}
