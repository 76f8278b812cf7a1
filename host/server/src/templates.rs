//! The plugin templates of `everruns plugin new` (`sdk/<lang>/template/`, embedded by
//! `build.rs`; the Rust one with the `everruns-sdk` crate vendored under `everruns-sdk/`)
//! and their placeholders, replaced in file contents and file names (not in the vendored
//! SDK): `{{id}}` (the capability id) and `{{id_snake}}` (the id with `-` as `_`, for crate
//! and module names). A scaffold refers to nothing outside itself, so it builds wherever
//! the binary runs.

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

include!(concat!(env!("OUT_DIR"), "/templates.rs"));

/// What the placeholders stand for.
#[derive(Debug)]
pub struct Vars {
    pub id: String,
}

/// Where the Rust template carries the SDK crate (files there are copied as they are).
const VENDORED_SDK: &str = "everruns-sdk/";

impl Vars {
    fn apply(&self, text: &str) -> String {
        text.replace("{{id}}", &self.id)
            .replace("{{id_snake}}", &self.id.replace('-', "_"))
    }
}

/// Writes the `lang` template into `target` (which must not exist or be empty); returns
/// the files written, relative to `target`.
pub fn scaffold(lang: &str, target: &Path, vars: &Vars) -> anyhow::Result<Vec<PathBuf>> {
    let Some((_, files)) = TEMPLATES.iter().find(|(l, _)| *l == lang) else {
        bail!("no template for language `{lang}`");
    };
    if target.exists()
        && std::fs::read_dir(target)
            .with_context(|| format!("reading {}", target.display()))?
            .next()
            .is_some()
    {
        bail!("{} already exists and is not empty", target.display());
    }
    let mut written = Vec::new();
    for (rel, bytes) in files.iter() {
        let vendored = rel.starts_with(VENDORED_SDK);
        let rel = PathBuf::from(if vendored {
            (*rel).to_owned()
        } else {
            vars.apply(rel)
        });
        let path = target.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        match std::str::from_utf8(bytes) {
            Ok(text) if !vendored => std::fs::write(&path, vars.apply(text)),
            _ => std::fs::write(&path, bytes),
        }
        .with_context(|| format!("writing {}", path.display()))?;
        if rel.extension().is_some_and(|e| e == "sh") {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))?;
        }
        written.push(rel);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_language_has_a_template_with_a_manifest() {
        for lang in ["rust", "python", "js"] {
            let (_, files) = TEMPLATES.iter().find(|(l, _)| *l == lang).unwrap();
            assert!(!files.is_empty(), "{lang} template is empty");
        }
        let (_, rust) = TEMPLATES.iter().find(|(l, _)| *l == "rust").unwrap();
        let manifest = rust.iter().find(|(p, _)| *p == "capability.toml").unwrap();
        assert!(
            std::str::from_utf8(manifest.1)
                .unwrap()
                .contains("id = \"{{id}}\"")
        );
    }

    #[test]
    fn placeholders_are_replaced_and_a_non_empty_target_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let vars = Vars {
            id: "my-tool".into(),
        };
        let target = dir.path().join("my-tool");
        let files = scaffold("rust", &target, &vars).unwrap();
        assert!(files.contains(&PathBuf::from("capability.toml")));
        for file in &files {
            let text = std::fs::read_to_string(target.join(file)).unwrap();
            assert!(
                !text.contains("{{id"),
                "{} keeps a placeholder",
                file.display()
            );
        }
        let manifest = std::fs::read_to_string(target.join("capability.toml")).unwrap();
        assert!(manifest.contains("id = \"my-tool\""));
        assert!(manifest.contains("my_tool.wasm"));
        // The SDK crate comes with it, byte for byte, and the plugin depends on that copy.
        for part in ["Cargo.toml", "src/lib.rs", "wit/capability.wit"] {
            let vendored = std::fs::read(target.join("everruns-sdk").join(part)).unwrap();
            let source = std::fs::read(
                Path::new(env!("CARGO_MANIFEST_DIR"))
                    .join("../../sdk/rust")
                    .join(part),
            )
            .unwrap();
            assert!(
                vendored == source,
                "everruns-sdk/{part} differs from sdk/rust"
            );
        }
        let cargo = std::fs::read_to_string(target.join("Cargo.toml")).unwrap();
        assert!(
            cargo.contains("path = \"everruns-sdk\"")
                && !cargo.contains(env!("CARGO_MANIFEST_DIR")),
            "{cargo}"
        );
        let err = scaffold("rust", &target, &vars).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
    }
}
