//! The object decoder: any bytes, as an object read from disk or S3.
fn main() {
    afl::fuzz!(|data: &[u8]| keytrail_fuzz::decode(data));
}
