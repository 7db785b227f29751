//! keytrail-follow against a real S3 and SQS API: moto's server on 127.0.0.1, started once
//! for the test process. One test binary; helpers in `util`.

mod findings;
mod poll;
mod queue;
mod s3lake;
mod util;
