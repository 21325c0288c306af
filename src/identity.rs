//! The node's ed25519 identity: kept in a file so a restarted node keeps its peer id.

use std::io::Write;
use std::path::Path;

use libp2p::identity::Keypair;
use libp2p::pnet::PreSharedKey;

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: cannot read identity: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("{path}: cannot write identity: {source}")]
    Write { path: String, source: std::io::Error },
    #[error("{path}: not a valid identity key file: {reason}")]
    Invalid { path: String, reason: String },
}

/// Loads the key at `path`, or creates one there (mode 0600) if the file does not exist.
/// Returns the key and whether it was newly created.
pub fn load_or_create(path: &Path) -> Result<(Keypair, bool), IdentityError> {
    let shown = path.display().to_string();
    match std::fs::read(path) {
        Ok(bytes) => {
            let key = Keypair::from_protobuf_encoding(&bytes)
                .map_err(|e| IdentityError::Invalid { path: shown, reason: e.to_string() })?;
            Ok((key, false))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = Keypair::generate_ed25519();
            let bytes = key.to_protobuf_encoding().expect("an ed25519 keypair always has a protobuf encoding");
            write_private(path, &bytes).map_err(|source| IdentityError::Write { path: shown, source })?;
            Ok((key, true))
        }
        Err(source) => Err(IdentityError::Read { path: shown, source }),
    }
}

/// Reads a pre-shared key for a private cluster, in libp2p's `swarm.key` format.
pub fn read_psk(path: &Path) -> Result<PreSharedKey, IdentityError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| IdentityError::Read { path: shown.clone(), source })?;
    text.trim().parse::<PreSharedKey>().map_err(|e| IdentityError::Invalid {
        path: shown,
        reason: format!("not a swarm.key (/key/swarm/psk/1.0.0/, /base16/, 64 hex digits): {e}"),
    })
}

/// Writes a new random pre-shared key to `path` (mode 0600). Never overwrites a key: every
/// node of the cluster must be given the same one.
pub fn create_psk(path: &Path) -> Result<PreSharedKey, IdentityError> {
    let key = PreSharedKey::new(rand::random::<[u8; 32]>());
    write_private(path, key.to_key_file().as_bytes())
        .map_err(|source| IdentityError::Write { path: path.display().to_string(), source })?;
    Ok(key)
}

fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    // create_new: never clobber a key another process wrote in the meantime.
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn same_file_same_peer_id_and_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/identity.key");
        let (a, created) = load_or_create(&path).unwrap();
        assert!(created);
        let (b, created) = load_or_create(&path).unwrap();
        assert!(!created);
        assert_eq!(a.public().to_peer_id(), b.public().to_peer_id());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn psk_round_trips_and_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("swarm.key");
        let key = create_psk(&path).unwrap();
        assert_eq!(read_psk(&path).unwrap(), key);
        assert!(std::fs::read_to_string(&path).unwrap().starts_with("/key/swarm/psk/1.0.0/\n/base16/\n"));
        assert!(create_psk(&path).is_err(), "an existing key must not be replaced");
        std::fs::write(&path, "/key/swarm/psk/1.0.0/\n/base16/\nxyz\n").unwrap();
        let e = read_psk(&path).unwrap_err().to_string();
        assert!(e.contains("swarm.key") && e.contains("not a swarm.key"), "{e}");
    }

    #[test]
    fn garbage_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("identity.key");
        std::fs::write(&path, b"not a key").unwrap();
        let e = load_or_create(&path).unwrap_err().to_string();
        assert!(e.contains("identity.key") && e.contains("not a valid identity"), "{e}");
    }
}
