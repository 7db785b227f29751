//! See `keytrail_fuzz::rule`.
fn main() {
    afl::fuzz!(|data: &[u8]| keytrail_fuzz::rule(data));
}
