//! The scheduled-event fixture used with `cargo lambda invoke` is what the runtime hands `main.rs`.

use aws_lambda_events::eventbridge::EventBridgeEvent;

#[test]
fn scheduled_event_fixture_parses_as_the_handler_input() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../tests/fixtures/scheduled-event.json"
    );
    let text = std::fs::read_to_string(path).expect("fixture");
    let event: EventBridgeEvent = serde_json::from_str(&text).expect("an EventBridge event");
    assert_eq!(event.detail_type, "Scheduled Event");
    assert_eq!(event.source, "aws.events");
}
