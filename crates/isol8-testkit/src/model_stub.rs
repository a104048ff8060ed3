//! A scripted OpenAI-compatible model server for the `agent` runtime's Docker tests: the
//! Python script `model_stub.py` (next to this file), started on a loopback address of
//! this machine on port 443 with a self-signed certificate made for that address (the
//! `filtered` proxy tunnels only to port 443, and Node tunnels every proxied request).
//!
//! Its first chat-completions call is answered with one tool call of pi's `write` tool
//! (a given file, a given text), every later one with a final message followed by the API
//! key the call carried. A test trusts [`ModelStub::cert`] in the sandbox (the engine's
//! `caBundle`), exempts the address (`exemptRanges`), allows it (whitelist), and points
//! pi at [`ModelStub::models_json`].

use std::io::BufRead as _;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

/// The stub's script.
const SCRIPT: &str = include_str!("model_stub.py");

/// A running stub (killed, and its files removed, on drop).
#[derive(Debug)]
pub struct ModelStub {
    child: Child,
    dir: PathBuf,
    host: Ipv4Addr,
}

impl Drop for ModelStub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A loopback address of this test process's own (127/8 is all loopback on Linux);
/// `last` tells a process's stubs apart.
pub fn stub_host(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 79, (std::process::id() % 200) as u8 + 1, last)
}

impl ModelStub {
    /// Starts the stub on `host`:443; its first answer has pi write `file_text` to
    /// `file_path`, its later ones say `final_text` and the key they were sent. Returns
    /// once it listens; panics when `openssl` or `python3` are missing.
    pub fn start(host: Ipv4Addr, file_path: &str, file_text: &str, final_text: &str) -> Self {
        let dir =
            std::env::temp_dir().join(format!("isol8-model-stub-{}-{host}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("stub dir");
        std::fs::write(dir.join("model_stub.py"), SCRIPT).expect("stub script");
        let status = Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec"])
            .args(["-pkeyopt", "ec_paramgen_curve:prime256v1"])
            .args(["-nodes", "-days", "1", "-subj", "/CN=isol8 model stub"])
            .arg("-addext")
            .arg(format!("subjectAltName=IP:{host}"))
            .arg("-keyout")
            .arg(dir.join("key.pem"))
            .arg("-out")
            .arg(dir.join("cert.pem"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl made no certificate");
        let mut child = Command::new("python3")
            .arg(dir.join("model_stub.py"))
            .arg(host.to_string())
            .arg("443")
            .arg(dir.join("cert.pem"))
            .arg(dir.join("key.pem"))
            .arg(dir.join("calls.jsonl"))
            .args([file_path, file_text, final_text])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the stub");
        let out = child.stdout.take().expect("stdout");
        let stub = ModelStub { child, dir, host };
        let mut line = String::new();
        std::io::BufReader::new(out)
            .read_line(&mut line)
            .expect("the stub's first line");
        assert_eq!(line.trim(), "ready", "the model stub did not start");
        stub
    }

    /// The stub's address.
    pub fn host(&self) -> Ipv4Addr {
        self.host
    }

    /// Path of its certificate (PEM), to be trusted in the sandbox (`caBundle`).
    pub fn cert(&self) -> String {
        self.dir.join("cert.pem").display().to_string()
    }

    /// The whitelist entry admitting exactly the stub's address.
    pub fn whitelist_entry(&self) -> String {
        format!("^{}$", self.host.to_string().replace('.', "\\."))
    }

    /// pi's `models.json` naming the stub as provider `stub`, model `stub-model` (an
    /// OpenAI-compatible server; its key from the environment variable `STUB_API_KEY`).
    pub fn models_json(&self) -> String {
        serde_json::json!({
            "providers": {
                "stub": {
                    "baseUrl": format!("https://{}/v1", self.host),
                    "api": "openai-completions",
                    "apiKey": "STUB_API_KEY",
                    "compat": {"supportsDeveloperRole": false, "supportsReasoningEffort": false},
                    "models": [{"id": "stub-model", "name": "Stub", "reasoning": false,
                                "contextWindow": 32000, "maxTokens": 1000}]
                }
            }
        })
        .to_string()
    }

    /// The calls it received so far: `(Authorization header, JSON body)`.
    pub fn calls(&self) -> Vec<(String, serde_json::Value)> {
        let text = std::fs::read_to_string(self.dir.join("calls.jsonl")).unwrap_or_default();
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a call line");
                let auth = v["authorization"].as_str().unwrap_or("").to_string();
                (auth, v["body"].clone())
            })
            .collect()
    }
}
