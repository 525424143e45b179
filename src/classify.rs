//! Turns a Google response (status and body) into an `Outcome`. This is the only code that reads
//! Google's error details (`QuotaFailure`, `RetryInfo`, `ErrorInfo`). (Stub.)

use crate::pool::Outcome;

pub fn classify(status: u16, _body: &[u8]) -> Outcome {
    match status {
        200..=299 => Outcome::Success,
        _ => Outcome::ClientError,
    }
}
