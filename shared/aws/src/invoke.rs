//! Starting a Lambda function asynchronously (`lambda:InvokeFunction`, `InvocationType=Event`):
//! the drain's tick starts its extra workers this way. Lambda queues the event and answers at
//! once (202); the call never waits for the function to run.

use crate::error::{classify_sdk_error, AwsError, ErrorKind};
use aws_sdk_lambda::primitives::Blob;
use aws_sdk_lambda::types::InvocationType;

/// A function that can be started with an event.
#[derive(Clone, Debug)]
pub struct Function {
    pub client: aws_sdk_lambda::Client,
    /// Its name or ARN.
    pub name: String,
}

impl Function {
    pub fn new(client: aws_sdk_lambda::Client, name: impl Into<String>) -> Self {
        Function {
            client,
            name: name.into(),
        }
    }

    /// Queues one asynchronous invocation with `payload` (JSON).
    pub async fn start(&self, payload: &[u8]) -> Result<(), AwsError> {
        let out = self
            .client
            .invoke()
            .function_name(&self.name)
            .invocation_type(InvocationType::Event)
            .payload(Blob::new(payload))
            .send()
            .await
            .map_err(|e| classify_sdk_error("Invoke", &e))?;
        match out.status_code() {
            202 => Ok(()),
            status => Err(AwsError {
                operation: "Invoke",
                kind: ErrorKind::Other,
                code: None,
                message: format!("asynchronous invoke answered {status}, not 202"),
            }),
        }
    }
}
