//! A progress bar on stderr, shown only when stderr is a terminal.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use keytrail_ingest::Progress;

pub struct Bar {
    bar: ProgressBar,
    events: AtomicU64,
}

impl Bar {
    /// A bar when stderr is a terminal and `quiet` is off; a hidden one otherwise.
    pub fn new(quiet: bool) -> Bar {
        let bar = if quiet || !std::io::stderr().is_terminal() {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden())
        } else {
            ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr())
        };
        Bar {
            bar,
            events: AtomicU64::new(0),
        }
    }
}

impl Progress for Bar {
    fn start(&self, _objects: u64, bytes: u64) {
        self.bar.set_length(bytes);
        self.bar.set_style(
            ProgressStyle::with_template(
                "{spinner} {bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {msg} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        self.bar.enable_steady_tick(Duration::from_millis(200));
    }

    fn object_done(&self, bytes: u64, events: u64) {
        self.bar.inc(bytes);
        if events > 0 {
            let n = self.events.fetch_add(events, Ordering::Relaxed) + events;
            self.bar
                .set_message(format!("{} events", crate::output::thousands(n)));
        }
    }

    fn phase(&self, name: &str) {
        self.bar.set_message(name.to_owned());
    }

    fn finish(&self) {
        self.bar.finish_and_clear();
    }
}
