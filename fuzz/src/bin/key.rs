//! See `keytrail_fuzz::key`.
fn main() {
    afl::fuzz!(|data: &[u8]| keytrail_fuzz::key(data));
}
