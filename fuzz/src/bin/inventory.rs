//! See `keytrail_fuzz::inventory`.
fn main() {
    afl::fuzz!(|data: &[u8]| keytrail_fuzz::inventory(data));
}
