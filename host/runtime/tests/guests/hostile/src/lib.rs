//! The hostile test plugin: one tool per attack (spin forever, allocate without bound,
//! recurse without bound, return a huge output, reach forbidden or private hosts, read
//! an ungranted secret, poke at files, environment and sockets, write key-value state without
//! end).

wit_bindgen::generate!({
    path: "../../../../../wit/0.1.0",
    world: "plugin",
});

use everruns::capability::types::{
    CallContext, CapabilityInfo, ToolCall, ToolError, ToolOutput, ToolSpec,
};
use everruns::capability::{kv, secrets};
use exports::everruns::capability::capability::Guest;
use serde_json::{Value, json};

struct Hostile;

const TOOLS: &[&str] = &[
    "spin",
    "memory-bomb",
    "recurse",
    "huge-output",
    "http-get",
    "secret",
    "sandbox-probe",
    "kv-flood",
];

impl Guest for Hostile {
    fn info() -> CapabilityInfo {
        CapabilityInfo {
            id: "hostile".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "Misbehaves on request".into(),
        }
    }

    fn system_prompt(_ctx: CallContext) -> Option<String> {
        None
    }

    fn tools(_ctx: CallContext) -> Vec<ToolSpec> {
        TOOLS
            .iter()
            .map(|name| ToolSpec {
                name: (*name).into(),
                description: format!("hostile: {name}"),
                parameters_schema: json!({"type": "object"}).to_string(),
            })
            .collect()
    }

    fn call_tool(_ctx: CallContext, call: ToolCall) -> Result<ToolOutput, ToolError> {
        let args: Value = serde_json::from_str(&call.arguments).unwrap_or(Value::Null);
        match call.name.as_str() {
            "spin" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "memory-bomb" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    let mut block = vec![0u8; 1 << 20];
                    block[4096] = 1;
                    hoard.push(std::hint::black_box(block));
                }
            }
            "recurse" => Ok(ToolOutput::Text(recurse(u64::MAX).to_string())),
            "huge-output" => {
                let mib = args["mib"].as_u64().unwrap_or(8) as usize;
                Ok(ToolOutput::Text("x".repeat(mib << 20)))
            }
            "http-get" => {
                let url = args["url"].as_str().unwrap_or("http://example.com/");
                Ok(ToolOutput::Json(
                    match http_get(url) {
                        Ok(status) => json!({"status": status}),
                        Err(e) => json!({"error": e}),
                    }
                    .to_string(),
                ))
            }
            "secret" => {
                let name = args["name"].as_str().unwrap_or("");
                match secrets::get(name) {
                    Ok(value) => Ok(ToolOutput::Text(format!("len={}", value.len()))),
                    Err(e) => Err(ToolError::Denied(format!("{e:?}"))),
                }
            }
            // Writes `flood/<n>` keys of `bytes` bytes each (default 100) until a write fails
            // or `max` keys (default 100,000) were written; reports how far it got.
            "kv-flood" => {
                let bytes = args["bytes"].as_u64().unwrap_or(100) as usize;
                let max = args["max"].as_u64().unwrap_or(100_000);
                let start = kv::list_keys("flood/").map(|k| k.len()).unwrap_or(0) as u64;
                let mut written = 0u64;
                let mut error = None;
                while written < max {
                    match kv::set(&format!("flood/{:08}", start + written), &vec![7u8; bytes]) {
                        Ok(()) => written += 1,
                        Err(e) => {
                            error = Some(format!("{e:?}"));
                            break;
                        }
                    }
                }
                Ok(ToolOutput::Text(
                    json!({"written": written, "error": error}).to_string(),
                ))
            }
            "sandbox-probe" => {
                let files = ["/etc/passwd", "/proc/self/environ", "capability.toml", "."]
                    .iter()
                    .map(|p| {
                        let r = std::fs::read(p)
                            .map(|b| format!("read {} bytes", b.len()))
                            .unwrap_or_else(|e| format!("error: {e}"));
                        (p.to_string(), Value::String(r))
                    })
                    .collect::<serde_json::Map<_, _>>();
                let read_dir = std::fs::read_dir("/")
                    .map(|d| format!("{} entries", d.count()))
                    .unwrap_or_else(|e| format!("error: {e}"));
                let write = std::fs::write("/tmp/everruns-hostile", b"x")
                    .map(|_| "written".to_string())
                    .unwrap_or_else(|e| format!("error: {e}"));
                let tcp = std::net::TcpStream::connect("127.0.0.1:9")
                    .map(|_| "connected".to_string())
                    .unwrap_or_else(|e| format!("error: {e}"));
                let dns = std::net::ToSocketAddrs::to_socket_addrs("localhost:80")
                    .map(|a| format!("{} addresses", a.count()))
                    .unwrap_or_else(|e| format!("error: {e}"));
                let mut stdin = String::new();
                let stdin = std::io::Read::read_to_string(&mut std::io::stdin(), &mut stdin)
                    .map(|n| format!("read {n} bytes"))
                    .unwrap_or_else(|e| format!("error: {e}"));
                Ok(ToolOutput::Json(
                    json!({
                        "files": files,
                        "read_dir": read_dir,
                        "write": write,
                        "env": std::env::vars().count(),
                        "args": std::env::args().count(),
                        "tcp": tcp,
                        "dns": dns,
                        "stdin": stdin,
                        "clock_ok": std::time::SystemTime::now()
                            .duration_since(std::time::UNIX_EPOCH)
                            .map(|d| d.as_secs() > 1_600_000_000)
                            .unwrap_or(false),
                    })
                    .to_string(),
                ))
            }
            other => Err(ToolError::NotFound(other.into())),
        }
    }
}

#[inline(never)]
fn recurse(n: u64) -> u64 {
    if n == 0 {
        return 0;
    }
    1u64.wrapping_add(recurse(std::hint::black_box(n - 1)))
}

fn http_get(url: &str) -> Result<u16, String> {
    use wasi::http::outgoing_handler;
    use wasi::http::types::{Fields, OutgoingRequest, Scheme};

    let (scheme, rest) = url.split_once("://").ok_or("bad url")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let scheme = if scheme == "https" {
        Scheme::Https
    } else {
        Scheme::Http
    };
    request.set_scheme(Some(&scheme)).map_err(|_| "scheme")?;
    request
        .set_authority(Some(authority))
        .map_err(|_| "authority")?;
    request
        .set_path_with_query(Some(path))
        .map_err(|_| "path")?;
    let response = outgoing_handler::handle(request, None).map_err(|e| format!("{e:?}"))?;
    response.subscribe().block();
    match response.get() {
        Some(Ok(Ok(resp))) => Ok(resp.status()),
        Some(Ok(Err(code))) => Err(format!("{code:?}")),
        Some(Err(())) => Err("response already taken".into()),
        None => Err("response not ready".into()),
    }
}

export!(Hostile);
