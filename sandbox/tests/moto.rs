//! moto's SQS, started from the repository's venv.

use ferry_sandbox::Moto;

#[tokio::test]
async fn sqs_send_receive_regions_and_reset() {
    let moto = Moto::start().await.unwrap();
    assert!(moto.endpoint().starts_with("http://127.0.0.1:"));
    let sqs = moto.sqs_client("us-east-1");
    let other = moto.sqs_client("eu-west-1");

    let url = sqs
        .create_queue()
        .queue_name("buffer")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    sqs.send_message()
        .queue_url(&url)
        .message_body("hello ferry")
        .send()
        .await
        .unwrap();
    let received = sqs
        .receive_message()
        .queue_url(&url)
        .max_number_of_messages(10)
        .wait_time_seconds(1)
        .send()
        .await
        .unwrap();
    let messages = received.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].body(), Some("hello ferry"));
    sqs.delete_message()
        .queue_url(&url)
        .receipt_handle(messages[0].receipt_handle().unwrap())
        .send()
        .await
        .unwrap();

    // Queues are per region.
    let listed = other.list_queues().send().await.unwrap();
    assert!(listed.queue_urls().is_empty(), "{:?}", listed.queue_urls());

    moto.reset().await.unwrap();
    let listed = sqs.list_queues().send().await.unwrap();
    assert!(
        listed.queue_urls().is_empty(),
        "reset kept {:?}",
        listed.queue_urls()
    );
}

#[tokio::test]
async fn moto_dies_on_drop() {
    let moto = Moto::start().await.unwrap();
    let port = moto.port();
    drop(moto);
    let refused = tokio::net::TcpStream::connect(("127.0.0.1", port)).await;
    assert!(refused.is_err(), "moto still listening after drop");
}

const ORPHAN_ENV: &str = "FERRY_SANDBOX_ORPHAN_HELPER";

/// Not a test on its own: when re-run by `moto_dies_with_its_parent`, starts moto, reports its
/// port and waits to be killed.
#[tokio::test]
async fn orphan_helper() {
    if std::env::var_os(ORPHAN_ENV).is_none() {
        return;
    }
    let moto = Moto::start().await.unwrap();
    println!("\nMOTO_PORT={}", moto.port());
    use std::io::Write;
    std::io::stdout().flush().unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(30)).await;
}

#[tokio::test]
async fn moto_dies_with_its_parent() {
    use std::io::BufRead;
    let mut helper = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "orphan_helper",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(ORPHAN_ENV, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let stdout = helper.stdout.take().unwrap();
    let port: u16 = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find_map(|l| {
                l.split("MOTO_PORT=")
                    .nth(1)
                    .map(|p| p.trim().parse().unwrap())
            })
    })
    .await
    .unwrap()
    .expect("the helper reported no port");
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_ok());

    helper.kill().unwrap(); // SIGKILL: no destructor runs in the helper
    helper.wait().unwrap();
    ferry_sandbox::wait_until(std::time::Duration::from_secs(5), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err()
    })
    .await
    .expect("moto outlived its SIGKILLed parent");
}
