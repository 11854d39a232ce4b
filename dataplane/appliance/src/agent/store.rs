//! The last accepted configuration on disk: one protobuf `ConfigUpdate` (a snapshot) in
//! `<state_dir>/control-state.pb`, replaced atomically (write a temporary file, fsync it, rename
//! it over the old one, fsync the directory), so a crash leaves the old or the new file, never
//! a torn one.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use popmesh_ctrl_api::pb::{config_update, ConfigUpdate};
use prost::Message;

const FILE: &str = "control-state.pb";

/// The state file in `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Writes `update` (a snapshot) as the state in `dir`, creating `dir` if needed.
pub fn save(dir: &Path, update: &ConfigUpdate) -> anyhow::Result<()> {
    fs::create_dir_all(dir)
        .with_context(|| format!("control.state_dir: cannot create {}", dir.display()))?;
    let target = path(dir);
    let tmp = dir.join(format!("{FILE}.tmp"));
    let bytes = update.encode_to_vec();
    let mut f = File::create(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(&bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    drop(f);
    fs::rename(&tmp, &target)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), target.display()))?;
    File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("cannot fsync directory {}", dir.display()))?;
    Ok(())
}

/// The saved state in `dir`; `None` when there is none yet.
///
/// # Errors
/// When the file exists but cannot be read, does not decode, or is not a snapshot.
pub fn load(dir: &Path) -> anyhow::Result<Option<ConfigUpdate>> {
    let p = path(dir);
    let bytes = match fs::read(&p) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", p.display())),
    };
    let update = ConfigUpdate::decode(bytes.as_slice())
        .with_context(|| format!("{} is not a saved control config", p.display()))?;
    if !matches!(update.body, Some(config_update::Body::Snapshot(_))) {
        anyhow::bail!("{} holds no snapshot", p.display());
    }
    Ok(Some(update))
}

#[cfg(test)]
mod tests {
    use super::*;
    use popmesh_ctrl_api::pb::{ConfigDelta, ConfigSnapshot, Session};

    #[test]
    fn round_trip_and_refusals() {
        let dir = tempfile::tempdir().expect("tempdir");
        let state = dir.path().join("nested");
        assert!(load(&state).expect("no dir is no state").is_none());
        let update = ConfigUpdate {
            version: 7,
            nonce: String::new(),
            body: Some(config_update::Body::Snapshot(ConfigSnapshot {
                sessions: vec![Session {
                    name: "s".into(),
                    ..Default::default()
                }],
                ..Default::default()
            })),
        };
        save(&state, &update).expect("saves");
        assert_eq!(load(&state).expect("loads"), Some(update.clone()));
        assert!(!state.join("control-state.pb.tmp").exists());

        fs::write(path(&state), b"\xff\xff not protobuf").expect("write");
        let e = load(&state).expect_err("garbage refused");
        assert!(
            format!("{e:#}").contains("is not a saved control config"),
            "{e:#}"
        );

        let delta = ConfigUpdate {
            body: Some(config_update::Body::Delta(ConfigDelta::default())),
            ..update
        };
        fs::write(path(&state), delta.encode_to_vec()).expect("write");
        let e = load(&state).expect_err("delta refused");
        assert!(format!("{e:#}").contains("holds no snapshot"), "{e:#}");
    }
}
