//! The plugin templates of `everruns plugin new` (`sdk/<lang>/template/`, embedded by
//! `build.rs`) and their placeholders, replaced in file contents and file names:
//! `{{id}}` (the capability id), `{{id_snake}}` (the id with `-` as `_`, for crate and
//! module names), `{{sdk_dir}}` and `{{wit_dir}}` (absolute paths of the Everruns `sdk`
//! and `wit` directories the plugin builds against).

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

include!(concat!(env!("OUT_DIR"), "/templates.rs"));

/// What the placeholders stand for.
#[derive(Debug)]
pub struct Vars {
    pub id: String,
    pub sdk_dir: PathBuf,
    pub wit_dir: PathBuf,
}

impl Vars {
    fn apply(&self, text: &str) -> String {
        text.replace("{{id}}", &self.id)
            .replace("{{id_snake}}", &self.id.replace('-', "_"))
            .replace("{{sdk_dir}}", &self.sdk_dir.to_string_lossy())
            .replace("{{wit_dir}}", &self.wit_dir.to_string_lossy())
    }
}

/// The `sdk` directory of the checkout this binary was built from, if it still exists.
pub fn default_sdk_dir() -> Option<PathBuf> {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../../sdk"))
        .canonicalize()
        .ok()
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
        let rel = PathBuf::from(vars.apply(rel));
        let path = target.join(&rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        match std::str::from_utf8(bytes) {
            Ok(text) => std::fs::write(&path, vars.apply(text)),
            Err(_) => std::fs::write(&path, bytes),
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
            sdk_dir: "/opt/everruns/sdk".into(),
            wit_dir: "/opt/everruns/wit".into(),
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
        let err = scaffold("rust", &target, &vars).unwrap_err();
        assert!(err.to_string().contains("not empty"), "{err}");
    }
}
