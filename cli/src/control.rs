//! How `ferry local outage` (another terminal) reaches a running `ferry local up`: the sandbox
//! writes a state file with its endpoints and a loopback control port; commands are one line.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegionEndpoints {
    pub region: String,
    pub dynamodb: String,
    pub sqs: String,
    pub table: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct State {
    pub pid: u32,
    pub control: String,
    pub regions: Vec<RegionEndpoints>,
}

/// Where the running sandbox's state lives (`FERRY_STATE_DIR`, else the temp dir).
pub fn state_path() -> PathBuf {
    std::env::var_os("FERRY_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("ferry-local"))
        .join("state.json")
}

pub fn write_state(state: &State) -> std::io::Result<()> {
    let path = state_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let json = serde_json::to_string_pretty(state).map_err(std::io::Error::other)?;
    std::fs::write(path, json)
}

pub fn read_state() -> Result<State, String> {
    let path = state_path();
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "no running sandbox found ({}: {e}); start one with `ferry local up`",
            path.display()
        )
    })?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

pub fn remove_state(pid: u32) {
    if let Ok(s) = read_state() {
        if s.pid == pid {
            let _ = std::fs::remove_file(state_path());
        }
    }
}

/// A control command.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    Outage { region: String, seconds: u64 },
}

pub fn parse(line: &str) -> Result<Command, String> {
    let parts: Vec<&str> = line.split_whitespace().collect();
    match parts.as_slice() {
        ["outage", region, seconds] => Ok(Command::Outage {
            region: region.to_string(),
            seconds: seconds
                .parse()
                .map_err(|_| format!("bad seconds `{seconds}`"))?,
        }),
        _ => Err(format!("unknown command `{line}`")),
    }
}

/// Sends one command to the running sandbox and returns its answer.
pub async fn send(command: &str) -> Result<String, String> {
    let state = read_state()?;
    let mut stream = TcpStream::connect(&state.control)
        .await
        .map_err(|e| format!("sandbox at {} does not answer: {e}", state.control))?;
    stream
        .write_all(format!("{command}\n").as_bytes())
        .await
        .map_err(|e| e.to_string())?;
    let mut answer = String::new();
    BufReader::new(stream)
        .read_line(&mut answer)
        .await
        .map_err(|e| e.to_string())?;
    Ok(answer.trim().to_string())
}

/// Binds the control port on loopback.
pub async fn listen() -> std::io::Result<TcpListener> {
    TcpListener::bind("127.0.0.1:0").await
}
