//! Embeds the plugin templates of `everruns plugin new` (`sdk/<lang>/template/` for each
//! language) into the binary: generates `templates.rs` in `OUT_DIR` listing every file
//! with `include_bytes!`. A missing template directory is a build error that names it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const LANGUAGES: &[&str] = &["rust", "python", "js"];

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        // Build outputs and dependencies never belong to a template.
        if matches!(name.as_ref(), "target" | "node_modules" | "__pycache__") {
            continue;
        }
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut code = String::from("/// A template's files: (relative path, contents).\n");
    code.push_str("pub(crate) type Files = &'static [(&'static str, &'static [u8])];\n");
    code.push_str("/// (language, files) for every template.\n");
    code.push_str("pub(crate) const TEMPLATES: &[(&str, Files)] = &[\n");
    for lang in LANGUAGES {
        let dir = root.join("sdk").join(lang).join("template");
        println!("cargo:rerun-if-changed={}", dir.display());
        assert!(
            dir.is_dir(),
            "missing plugin template directory {}: `everruns plugin new --lang {lang}` \
             copies it; every language needs sdk/{lang}/template/",
            dir.display()
        );
        let mut list = Vec::new();
        files(&dir, &mut list);
        writeln!(code, "    ({lang:?}, &[").unwrap();
        for file in list {
            let rel = file.strip_prefix(&dir).expect("inside the template");
            let abs = file.canonicalize().expect("template file path");
            writeln!(
                code,
                "        ({:?}, include_bytes!({:?})),",
                rel.to_string_lossy(),
                abs.to_string_lossy()
            )
            .unwrap();
        }
        code.push_str("    ]),\n");
    }
    code.push_str("];\n");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("templates.rs"), code).expect("write templates.rs");
}
