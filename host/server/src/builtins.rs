//! The built-in capabilities: their components (`plugins/dist/*.wasm`, built from
//! `plugins/*` with the Rust SDK and committed) and manifests are embedded in the binary,
//! and written at start into `<data-dir>/builtin-plugins/<id>/`, which the registry then
//! loads like any plugins directory. The directory is managed: a file that differs from
//! the embedded one is replaced, a disabled or no longer shipped built-in is removed.

use std::path::Path;

use anyhow::Context;

/// One embedded built-in.
struct Builtin {
    id: &'static str,
    manifest: &'static str,
    wasm: &'static [u8],
}

macro_rules! builtin {
    ($id:literal) => {
        Builtin {
            id: $id,
            manifest: include_str!(concat!("../../../plugins/", $id, "/capability.toml")),
            wasm: include_bytes!(concat!("../../../plugins/dist/", $id, ".wasm")),
        }
    };
}

const BUILTINS: &[Builtin] = &[
    builtin!("current_time"),
    builtin!("web_fetch"),
    builtin!("session_files"),
    builtin!("todo"),
    builtin!("memory"),
    builtin!("guardrails"),
];

/// The ids of the built-in capabilities.
pub const IDS: &[&str] = &[
    "current_time",
    "web_fetch",
    "session_files",
    "todo",
    "memory",
    "guardrails",
];

/// The component's file name inside a built-in's directory (what its manifest names).
fn component_file(id: &str) -> String {
    format!("{id}.wasm")
}

fn up_to_date(dir: &Path, builtin: &Builtin) -> bool {
    let same = |name: &str, bytes: &[u8]| std::fs::read(dir.join(name)).is_ok_and(|b| b == bytes);
    same("capability.toml", builtin.manifest.as_bytes())
        && same(&component_file(builtin.id), builtin.wasm)
        && std::fs::read_dir(dir).is_ok_and(|entries| entries.count() == 2)
}

/// Brings `root` in line with the embedded built-ins minus `disabled`. Each directory is
/// replaced atomically (written beside, then renamed), so a scanner never sees a half
/// written one, and processes starting together on one data directory do not collide.
pub fn materialize(root: &Path, disabled: &[String]) -> anyhow::Result<()> {
    std::fs::create_dir_all(root)
        .with_context(|| format!("creating the built-in plugins directory {}", root.display()))?;
    for builtin in BUILTINS {
        let dir = root.join(builtin.id);
        if disabled.iter().any(|d| d == builtin.id) {
            if dir.exists() {
                std::fs::remove_dir_all(&dir)
                    .with_context(|| format!("removing disabled built-in {}", dir.display()))?;
            }
            continue;
        }
        if up_to_date(&dir, builtin) {
            continue;
        }
        let pid = std::process::id();
        let staging = root.join(format!(".staging-{}-{pid}", builtin.id));
        let _ = std::fs::remove_dir_all(&staging);
        std::fs::create_dir_all(&staging)?;
        std::fs::write(staging.join("capability.toml"), builtin.manifest)?;
        std::fs::write(staging.join(component_file(builtin.id)), builtin.wasm)?;
        if dir.exists() {
            let old = root.join(format!(".old-{}-{pid}", builtin.id));
            let _ = std::fs::remove_dir_all(&old);
            // Another process may have replaced it meanwhile; then ours is not needed.
            if std::fs::rename(&dir, &old).is_ok() {
                let _ = std::fs::remove_dir_all(&old);
            }
        }
        if let Err(e) = std::fs::rename(&staging, &dir) {
            let _ = std::fs::remove_dir_all(&staging);
            if !up_to_date(&dir, builtin) {
                return Err(e).with_context(|| format!("installing built-in {}", dir.display()));
            }
        }
        tracing::info!(capability = builtin.id, dir = %dir.display(), "built-in plugin written");
    }
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with('.') && !IDS.contains(&name.as_str()) && entry.path().is_dir() {
            std::fs::remove_dir_all(entry.path())
                .with_context(|| format!("removing retired built-in {name}"))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_the_embedded_builtins() {
        assert_eq!(BUILTINS.iter().map(|b| b.id).collect::<Vec<_>>(), IDS);
        for b in BUILTINS {
            assert!(b.manifest.contains(&format!("id = \"{}\"", b.id)));
            assert!(
                b.manifest
                    .contains(&format!("component = \"{}\"", component_file(b.id)))
            );
            assert!(b.wasm.starts_with(b"\0asm"), "{} is not a wasm file", b.id);
        }
    }

    #[test]
    fn materialize_writes_repairs_disables_and_retires() {
        let root = tempfile::tempdir().unwrap();
        materialize(root.path(), &[]).unwrap();
        for id in IDS {
            assert!(up_to_date(
                &root.path().join(id),
                &BUILTINS[IDS.iter().position(|i| i == id).unwrap()]
            ));
        }
        // A tampered component is replaced; a retired built-in is removed.
        let wasm = root.path().join("todo/todo.wasm");
        std::fs::write(&wasm, b"garbage").unwrap();
        std::fs::create_dir_all(root.path().join("retired")).unwrap();
        materialize(root.path(), &["web_fetch".to_owned()]).unwrap();
        assert!(std::fs::read(&wasm).unwrap().starts_with(b"\0asm"));
        assert!(!root.path().join("retired").exists());
        assert!(!root.path().join("web_fetch").exists());
        let left: Vec<String> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), IDS.len() - 1, "{left:?}");
    }
}
