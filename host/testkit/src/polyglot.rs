//! Python and JavaScript plugins for tests and benchmarks: installs the pinned guest
//! toolchains once under the target directory (componentize-py in a venv from
//! `sdk/python/requirements.txt`, componentize-qjs by `npm ci` from `sdk/js`'s lockfile),
//! builds the SDK examples in `plugins/examples/` (against `wit/0.2.0`), and builds plugins
//! scaffolded by `everruns plugin new` with their own scripts.
//!
//! Needs `python3` (with `venv`) and `node`/`npm` on PATH and the PyPI and npm registries
//! reachable (or already cached); panics with the install command otherwise.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use crate::guests::target_dir;

/// A guest language with an SDK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    /// componentize-py.
    Python,
    /// componentize-qjs (QuickJS).
    Js,
}

impl Lang {
    /// The directory name under `sdk/` and `plugins/examples/`.
    pub fn dir_name(self) -> &'static str {
        match self {
            Lang::Python => "python",
            Lang::Js => "js",
        }
    }

    /// The capability id of the language's example plugin.
    pub fn example_id(self) -> &'static str {
        match self {
            Lang::Python => "notes",
            Lang::Js => "tally",
        }
    }
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn work_dir() -> PathBuf {
    let dir = target_dir().join("polyglot");
    std::fs::create_dir_all(&dir).expect("create the polyglot work directory");
    dir
}

/// Holds an exclusive file lock (released on drop), so parallel test processes do not
/// install or build the same thing at once.
struct Lock(File);

impl Lock {
    fn take(name: &str) -> Self {
        let file = File::create(work_dir().join(format!(".{name}.lock"))).expect("lock file");
        file.lock().expect("take the lock");
        Lock(file)
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

fn run(command: &mut Command, what: &str, help: &str) {
    let status = command
        .status()
        .unwrap_or_else(|e| panic!("{what}: cannot run {command:?}: {e}\n{help}"));
    assert!(status.success(), "{what} failed ({status})\n{help}");
}

const PYTHON_HELP: &str = "The Python plugin tests need python3 with the venv module \
    (Debian: `apt-get install python3 python3-venv`) and PyPI; the toolchain is \
    `pip install -r sdk/python/requirements.txt` (componentize-py).";
const JS_HELP: &str = "The JavaScript plugin tests need node >= 18 and npm \
    (Debian: `apt-get install nodejs npm`) and the npm registry; the toolchain is \
    `npm ci` in sdk/js (componentize-qjs).";

/// A Python venv at `target/polyglot/<name>` with the pins of `requirements` (a path in the
/// repository) installed; made again when the pins change. Returns the venv.
fn pinned_venv(name: &str, requirements: &str, what: &str, help: &str) -> PathBuf {
    let _lock = Lock::take(name);
    let requirements = repo_root().join(requirements);
    let pins = std::fs::read_to_string(&requirements)
        .unwrap_or_else(|e| panic!("read {}: {e}", requirements.display()));
    let venv = work_dir().join(name);
    let stamp = venv.join(".everruns-requirements");
    if venv.join("bin/python").exists()
        && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&pins)
    {
        return venv;
    }
    let _ = std::fs::remove_dir_all(&venv);
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "creating the Python venv",
        help,
    );
    run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements),
        what,
        help,
    );
    std::fs::write(&stamp, pins).expect("write the venv stamp");
    venv
}

/// The pinned `componentize-py`, installed into `target/polyglot/venv` on first use.
pub fn componentize_py() -> &'static Path {
    static TOOL: OnceLock<PathBuf> = OnceLock::new();
    TOOL.get_or_init(|| {
        pinned_venv(
            "venv",
            "sdk/python/requirements.txt",
            "installing componentize-py",
            PYTHON_HELP,
        )
        .join("bin/componentize-py")
    })
}

/// The Python of a venv with the official MCP SDK (`tests/mcp/requirements.txt`), installed
/// into `target/polyglot/mcp-venv` on first use: the outside MCP implementation of the tests.
pub fn mcp_python() -> &'static Path {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON.get_or_init(|| {
        pinned_venv(
            "mcp-venv",
            "tests/mcp/requirements.txt",
            "installing the MCP Python SDK",
            "The MCP tests need python3 with the venv module (Debian: `apt-get install python3 \
             python3-venv`) and PyPI; the SDK is `pip install -r tests/mcp/requirements.txt`.",
        )
        .join("bin/python")
    })
}

/// The pinned `componentize-qjs`, installed by `npm ci` into `target/polyglot/js` on
/// first use.
pub fn componentize_qjs() -> &'static Path {
    static TOOL: OnceLock<PathBuf> = OnceLock::new();
    TOOL.get_or_init(|| {
        let _lock = Lock::take("js");
        let sdk = repo_root().join("sdk/js");
        let lockfile = std::fs::read_to_string(sdk.join("package-lock.json"))
            .expect("read sdk/js/package-lock.json");
        let dir = work_dir().join("js");
        let tool = dir.join("node_modules/.bin/componentize-qjs");
        let stamp = dir.join(".everruns-lock");
        if tool.is_file() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&lockfile) {
            return tool;
        }
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the npm directory");
        for file in ["package.json", "package-lock.json"] {
            std::fs::copy(sdk.join(file), dir.join(file)).expect("copy the npm manifest");
        }
        run(
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir),
            "npm ci (componentize-qjs)",
            JS_HELP,
        );
        std::fs::write(&stamp, lockfile).expect("write the npm stamp");
        tool
    })
}

/// The environment a build script needs to find the pinned toolchain.
fn toolchain_env(lang: Lang, command: &mut Command) -> &mut Command {
    match lang {
        Lang::Python => command.env("COMPONENTIZE_PY", componentize_py()),
        Lang::Js => command.env("COMPONENTIZE_QJS", componentize_qjs()),
    }
}

/// Builds the example plugin of `lang` (with its `build.sh`) and returns a plugin
/// directory (`capability.toml` + component) under `root`. The component is built once
/// and reused while its sources (example, SDK, WIT, toolchain pin) are unchanged.
pub fn example_plugin(lang: Lang, root: &Path) -> PathBuf {
    let example = repo_root().join("plugins/examples").join(lang.dir_name());
    let manifest = std::fs::read_to_string(example.join("capability.toml"))
        .expect("read the example manifest");
    let component = manifest
        .lines()
        .find_map(|l| l.strip_prefix("component = \""))
        .and_then(|rest| rest.strip_suffix('"'))
        .expect("the example manifest names its component");
    let built = built_example(lang, &example, component);
    let dir = root.join(lang.example_id());
    std::fs::create_dir_all(&dir).expect("create the plugin directory");
    std::fs::write(dir.join("capability.toml"), &manifest).expect("write the manifest");
    std::fs::copy(built, dir.join(component)).expect("copy the component");
    dir
}

fn built_example(lang: Lang, example: &Path, component: &str) -> PathBuf {
    let sdk = repo_root().join("sdk").join(lang.dir_name());
    let (source, sdk_file, pin) = match lang {
        Lang::Python => ("app.py", "everruns_sdk.py", "requirements.txt"),
        Lang::Js => ("plugin.js", "everruns.js", "package-lock.json"),
    };
    let inputs = [
        example.join(source),
        example.join("build.sh"),
        sdk.join(sdk_file),
        sdk.join(pin),
        repo_root().join("wit/0.2.0/capability.wit"),
    ];
    let mut fingerprint = String::new();
    for input in &inputs {
        let text = std::fs::read_to_string(input)
            .unwrap_or_else(|e| panic!("read {}: {e}", input.display()));
        fingerprint.push_str(&text);
        fingerprint.push('\0');
    }

    // One slot per language, indexed by the enum's discriminant (Python 0, Js 1).
    static BUILT: [OnceLock<PathBuf>; 2] = [OnceLock::new(), OnceLock::new()];
    BUILT[lang as usize]
        .get_or_init(|| {
            let out_dir = work_dir().join("examples").join(lang.dir_name());
            std::fs::create_dir_all(&out_dir).expect("create the example output directory");
            let out = out_dir.join(component);
            let stamp = out_dir.join(".sources");
            let _lock = Lock::take(&format!("example-{}", lang.dir_name()));
            if out.is_file()
                && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&fingerprint)
            {
                return out;
            }
            // Build next to the output and rename, so a reader never sees half a file.
            let partial = out_dir.join(format!(".building-{}", std::process::id()));
            run(
                toolchain_env(
                    lang,
                    Command::new("sh")
                        .arg(example.join("build.sh"))
                        .arg(&partial),
                ),
                &format!("building the {} example", lang.dir_name()),
                match lang {
                    Lang::Python => PYTHON_HELP,
                    Lang::Js => JS_HELP,
                },
            );
            std::fs::rename(&partial, &out).expect("move the built example into place");
            std::fs::write(&stamp, &fingerprint).expect("write the example stamp");
            out
        })
        .clone()
}

/// Builds a scaffolded plugin exactly as its README says (`sh build.sh`), including the
/// script's own toolchain install into the plugin directory (`.venv` / `node_modules`).
pub fn build_scaffold(lang: Lang, dir: &Path) {
    run(
        Command::new("sh")
            .arg("build.sh")
            .current_dir(dir)
            .env_remove("COMPONENTIZE_PY")
            .env_remove("COMPONENTIZE_QJS"),
        &format!("building the scaffolded {} plugin", lang.dir_name()),
        match lang {
            Lang::Python => PYTHON_HELP,
            Lang::Js => JS_HELP,
        },
    );
}
