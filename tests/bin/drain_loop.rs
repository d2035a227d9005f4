//! The drain as a process of its own, for the tests that end it with SIGKILL: wired as the
//! Lambda's `main.rs` wires it (environment, clients, drainer), then one drain after another
//! until the process is killed. Each drain's report is a JSON line on stdout.

use ferry_drain::DrainEnv;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let env = DrainEnv::from_lookup(|k| std::env::var(k).ok())?;
    let base = ferry_aws::clients::base_config().await;
    let drainer = env.connect(&base, ferry_core::clock::system()).await;
    loop {
        let report = ferry_drain::drain(&drainer).await;
        println!("{}", serde_json::to_string(&report)?);
    }
}
