//! Embeds the plugin templates of `everruns plugin new` (`sdk/<lang>/template/` for each
//! language) into the binary: generates `templates.rs` in `OUT_DIR` listing every file
//! with `include_bytes!`. The Rust template also gets the `everruns-sdk` crate itself
//! (`sdk/rust`: its manifest, sources and WIT, the link to `wit/0.2.0` resolved) under
//! `everruns-sdk/`, so a scaffolded plugin builds with nothing but this binary's output:
//! one source of truth, vendored at build time. A missing template directory is a build
//! error that names it.

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

/// Where the Rust template carries the SDK crate.
const VENDORED_SDK: &str = "everruns-sdk";

/// The files of the `everruns-sdk` crate at `sdk` a plugin needs to build against it, as
/// (path in the template, file): the manifest, `src/` and `wit/`.
fn vendored_sdk(sdk: &Path) -> Vec<(String, PathBuf)> {
    let mut out = vec![(format!("{VENDORED_SDK}/Cargo.toml"), sdk.join("Cargo.toml"))];
    for part in ["src", "wit"] {
        let dir = sdk.join(part);
        println!("cargo:rerun-if-changed={}", dir.display());
        // `wit` is a link to `wit/0.2.0` in the repository: its files are what is vendored.
        let real = dir
            .canonicalize()
            .unwrap_or_else(|e| panic!("cannot resolve {}: {e}", dir.display()));
        let mut list = Vec::new();
        files(&real, &mut list);
        for file in list {
            let rel = file.strip_prefix(&real).expect("inside the SDK");
            out.push((
                format!("{VENDORED_SDK}/{part}/{}", rel.to_string_lossy()),
                file,
            ));
        }
    }
    println!(
        "cargo:rerun-if-changed={}",
        sdk.join("Cargo.toml").display()
    );
    out
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
        let mut entries: Vec<(String, PathBuf)> = list
            .into_iter()
            .map(|file| {
                let rel = file.strip_prefix(&dir).expect("inside the template");
                (rel.to_string_lossy().into_owned(), file)
            })
            .collect();
        if *lang == "rust" {
            entries.extend(vendored_sdk(&root.join("sdk").join("rust")));
        }
        writeln!(code, "    ({lang:?}, &[").unwrap();
        for (rel, file) in entries {
            let abs = file.canonicalize().expect("template file path");
            writeln!(
                code,
                "        ({rel:?}, include_bytes!({:?})),",
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
