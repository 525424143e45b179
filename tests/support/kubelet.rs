//! The folder layout the kubelet gives a ConfigMap or Secret volume, and its atomic update, so
//! tests can play the kubelet without a cluster.
//!
//! A volume root holds `..data` (a symlink to a timestamped folder with the real files) and one
//! symlink per visible file, `name -> ..data/name`. An update writes a new timestamped folder,
//! points `..data_tmp` at it, renames that over `..data` (the one atomic step), adds links for
//! new names, removes links for names that went away, then deletes the old folder.

use std::os::unix::fs::symlink;
use std::path::Path;

/// Lays out `root` as the kubelet does for a ConfigMap or Secret volume.
pub fn kubelet_init(root: &Path, files: &[(&str, String)]) {
    std::fs::create_dir_all(root).expect("volume root");
    kubelet_update(root, files, 0);
}

/// The kubelet's atomic update to generation `generation` (a new timestamped folder each time).
pub fn kubelet_update(root: &Path, files: &[(&str, String)], generation: u32) {
    let stamp = format!("..2026_11_22_08_00_00.{generation:09}");
    let dir = root.join(&stamp);
    std::fs::create_dir(&dir).expect("timestamped folder");
    for (name, contents) in files {
        std::fs::write(dir.join(name), contents).expect("payload");
    }
    let old = std::fs::read_link(root.join("..data")).ok();
    let _ = std::fs::remove_file(root.join("..data_tmp"));
    symlink(&stamp, root.join("..data_tmp")).expect("..data_tmp");
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap ..data");
    for (name, _) in files {
        let link = root.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            symlink(format!("..data/{name}"), &link).expect("user-visible symlink");
        }
    }
    if let Some(old) = old {
        if let Ok(entries) = std::fs::read_dir(root.join(&old)) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                if !files.iter().any(|(n, _)| std::ffi::OsStr::new(n) == name) {
                    let _ = std::fs::remove_file(root.join(&name));
                }
            }
        }
        let _ = std::fs::remove_dir_all(root.join(old));
    }
}
