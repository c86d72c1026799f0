//! Node secrets kept in files: the local API token and the masking key.

use std::path::Path;

/// Reads the secret in `path`, creating a fresh random one (256 bits, hex, mode 0600) if the file
/// does not exist. An existing file that is empty or readable by others is refused.
pub fn ensure(path: &Path) -> std::io::Result<String> {
    match std::fs::read_to_string(path) {
        Ok(t) if !t.trim().is_empty() => {
            check_mode(path)?;
            return Ok(t.trim().to_owned());
        }
        // Writing a fresh secret over an existing file would silently change every pseudonym
        // (masking key) or lock out every application (API token): say so instead.
        Ok(_) => {
            return Err(std::io::Error::other(
                "the file exists but is empty; put the secret back, or delete the file to have a new one generated at start",
            ))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| std::io::Error::other("no system randomness"))?;
    let secret = fedgate_catalog::hex(&bytes);
    write_new(path, &secret)?;
    Ok(secret)
}

fn check_mode(path: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path)?.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(std::io::Error::other(format!("readable by others (mode {mode:o}); run chmod 600")));
    }
    Ok(())
}

/// Writes a new secret file with mode 0600; fails if it exists.
pub fn write_new(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")?;
    f.sync_all()
}
