//! See `keytrail_fuzz::time`.
fn main() {
    afl::fuzz!(|data: &[u8]| keytrail_fuzz::time(data));
}
