//! The fault proxy in front of moto, injecting SQS's own faults.

use std::time::{Duration, Instant};

use aws_sdk_sqs::error::ProvideErrorMetadata;
use aws_sdk_sqs::types::{DeleteMessageBatchRequestEntry, SendMessageBatchRequestEntry};
use ferry_sandbox::{
    sqs_client_with, ClientOptions, FaultMode, FaultProxy, Moto, Slow, SqsAction, SqsFaults,
    INJECTED_ENTRY_CODE,
};

const REGION: &str = "us-east-1";

struct Bench {
    _moto: Moto,
    proxy: FaultProxy,
    sqs: aws_sdk_sqs::Client,
    url: String,
}

async fn bench(options: &ClientOptions) -> Bench {
    let moto = Moto::start().await.unwrap();
    let proxy = FaultProxy::start(&moto.endpoint()).unwrap();
    let sqs = sqs_client_with(&proxy.endpoint(), REGION, options);
    let url = sqs
        .create_queue()
        .queue_name("buffer")
        .send()
        .await
        .unwrap()
        .queue_url
        .unwrap();
    Bench {
        _moto: moto,
        proxy,
        sqs,
        url,
    }
}

impl Bench {
    /// Sends `n` messages in one batch; (successful ids, failed (id, code, sender fault)).
    async fn send(&self, n: usize) -> (Vec<String>, Vec<(String, String, bool)>) {
        let entries = (0..n)
            .map(|i| {
                SendMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .message_body(format!("m{i}"))
                    .build()
                    .unwrap()
            })
            .collect();
        let out = self
            .sqs
            .send_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .unwrap();
        let ok = out
            .successful()
            .iter()
            .map(|s| s.id().to_string())
            .collect();
        let failed = out
            .failed()
            .iter()
            .map(|f| (f.id().to_string(), f.code().to_string(), f.sender_fault()))
            .collect();
        (ok, failed)
    }

    async fn receive(&self) -> Vec<String> {
        let out = self
            .sqs
            .receive_message()
            .queue_url(&self.url)
            .max_number_of_messages(10)
            .visibility_timeout(30)
            .send()
            .await
            .unwrap();
        out.messages()
            .iter()
            .filter_map(|m| m.receipt_handle().map(str::to_string))
            .collect()
    }

    async fn delete(&self, receipts: &[String]) -> Vec<(String, String, bool)> {
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r)
                    .build()
                    .unwrap()
            })
            .collect();
        let out = self
            .sqs
            .delete_message_batch()
            .queue_url(&self.url)
            .set_entries(Some(entries))
            .send()
            .await
            .unwrap();
        out.failed()
            .iter()
            .map(|f| (f.id().to_string(), f.code().to_string(), f.sender_fault()))
            .collect()
    }

    async fn visible(&self) -> usize {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(&self.url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::All)
            .send()
            .await
            .unwrap();
        let attrs = out.attributes.unwrap_or_default();
        let get = |n| {
            attrs
                .get(&n)
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0)
        };
        get(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessages)
            + get(aws_sdk_sqs::types::QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
    }
}

fn faults(f: impl FnOnce(&mut SqsFaults)) -> FaultMode {
    let mut faults = SqsFaults::default();
    f(&mut faults);
    FaultMode::Sqs(faults)
}

#[tokio::test]
async fn send_entries_fail_one_by_one_and_the_rest_are_sent() {
    let b = bench(&ClientOptions::default()).await;
    b.proxy.set_mode(faults(|f| f.send_entries = 1.0));
    let (ok, failed) = b.send(3).await;
    assert!(ok.is_empty());
    assert_eq!(failed.len(), 3);
    assert!(failed
        .iter()
        .all(|(_, code, sender)| code == INJECTED_ENTRY_CODE && !sender));
    assert_eq!(b.visible().await, 0);

    b.proxy.set_mode(faults(|f| f.send_entries = 0.5));
    let mut sent = 0;
    let mut lost = 0;
    for _ in 0..4 {
        let (ok, failed) = b.send(10).await;
        assert_eq!(ok.len() + failed.len(), 10);
        sent += ok.len();
        lost += failed.len();
    }
    assert!((5..=35).contains(&lost), "{lost} of 40 failed");
    assert_eq!(b.visible().await, sent, "exactly the successful entries");
    assert_eq!(b.proxy.stats().failed_entries, 3 + lost as u64);
}

#[tokio::test]
async fn delete_entries_fail_or_are_invalid_and_the_messages_stay() {
    let b = bench(&ClientOptions::default()).await;
    b.send(4).await;
    let receipts = b.receive().await;
    assert_eq!(receipts.len(), 4);

    b.proxy.set_mode(faults(|f| f.delete_entries = 1.0));
    let failed = b.delete(&receipts[..2]).await;
    assert_eq!(failed.len(), 2);
    assert!(failed
        .iter()
        .all(|(_, code, _)| code == INJECTED_ENTRY_CODE));

    b.proxy.set_mode(faults(|f| f.invalid_receipts = 1.0));
    let failed = b.delete(&receipts[2..]).await;
    assert_eq!(failed.len(), 2);
    assert!(failed
        .iter()
        .all(|(_, code, sender)| code == "ReceiptHandleIsInvalid" && *sender));
    assert_eq!(b.visible().await, 4);

    b.proxy.set_mode(FaultMode::Pass);
    assert!(b.delete(&receipts).await.is_empty());
    assert_eq!(b.visible().await, 0);
}

#[tokio::test]
async fn throttling_is_sqs_throttling_and_the_sdk_retries_it() {
    let b = bench(&ClientOptions::default()).await;
    b.proxy.set_mode(faults(|f| f.throttle = 1.0));
    let once = sqs_client_with(
        &b.proxy.endpoint(),
        REGION,
        &ClientOptions::default().with_max_attempts(1),
    );
    let err = once
        .get_queue_url()
        .queue_name("buffer")
        .send()
        .await
        .unwrap_err();
    assert_eq!(
        err.as_service_error().and_then(|e| e.code()),
        Some("RequestThrottled")
    );
    assert_eq!(b.proxy.stats().throttled, 1);

    let retrying = sqs_client_with(
        &b.proxy.endpoint(),
        REGION,
        &ClientOptions::default().with_max_attempts(3),
    );
    assert!(retrying
        .get_queue_url()
        .queue_name("buffer")
        .send()
        .await
        .is_err());
    assert_eq!(b.proxy.stats().throttled, 4, "three attempts");

    b.proxy.set_mode(FaultMode::Pass);
    retrying
        .get_queue_url()
        .queue_name("buffer")
        .send()
        .await
        .unwrap();
}

#[tokio::test]
async fn slow_answers_of_one_action_and_a_heal_cuts_what_is_held() {
    let b = bench(&ClientOptions::default()).await;
    b.send(1).await;
    let slow = Slow {
        action: Some(SqsAction::ReceiveMessage),
        before: Duration::ZERO,
        after: Duration::from_millis(600),
    };
    b.proxy.set_mode(faults(|f| f.slow = Some(slow)));
    let started = Instant::now();
    let receipts = b.receive().await;
    assert_eq!(receipts.len(), 1);
    assert!(started.elapsed() >= Duration::from_millis(600));
    // Other actions are not slowed.
    let started = Instant::now();
    assert!(b.delete(&receipts).await.is_empty());
    assert!(started.elapsed() < Duration::from_millis(600));

    // Held for long, cut when the mode changes: the request never reaches SQS.
    let held = Slow {
        action: None,
        before: Duration::from_secs(60),
        after: Duration::ZERO,
    };
    b.proxy.set_mode(faults(|f| f.slow = Some(held)));
    let one_shot = sqs_client_with(
        &b.proxy.endpoint(),
        REGION,
        &ClientOptions::default().with_max_attempts(1),
    );
    let url = b.url.clone();
    let sending = tokio::spawn(async move {
        one_shot
            .send_message()
            .queue_url(url)
            .message_body("late")
            .send()
            .await
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.proxy.stats().held < 2 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    b.proxy.set_mode(FaultMode::Pass);
    assert!(sending.await.unwrap().is_err(), "cut");
    assert_eq!(b.visible().await, 0, "a cut request never reaches SQS");
}
