//! A progress line for long runs: redrawn in place on a terminal, a plain line every ~10 %
//! or 30 s otherwise (logs), silent when hidden. Rates count only this run's work.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const BAR_WIDTH: usize = 24;
/// Least time between redraws on a terminal.
const REDRAW: Duration = Duration::from_millis(100);
/// Most time between plain lines.
const PLAIN_EVERY: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Hidden,
    Terminal,
    Plain,
}

/// Progress of `total` items, reported on stderr.
#[derive(Debug)]
pub struct Progress {
    what: String,
    total: usize,
    done: usize,
    /// `done` when this run started (resumed work is not counted in the rate).
    start_done: usize,
    start: Instant,
    mode: Mode,
    /// When and at which count the line was last shown.
    last_shown: Option<(Instant, usize)>,
    /// The line on a terminal has not been ended with a newline yet.
    line_open: bool,
    finished: bool,
}

impl Progress {
    /// Progress of `total` items labelled `what` (e.g. "generate"); a redrawn line when
    /// stderr is a terminal, plain lines otherwise.
    pub fn new(total: usize, what: &str) -> Progress {
        let mode = if std::io::stderr().is_terminal() {
            Mode::Terminal
        } else {
            Mode::Plain
        };
        Progress::with_mode(total, what, mode)
    }

    /// A progress that prints nothing (tests, `--quiet`).
    pub fn hidden() -> Progress {
        Progress::with_mode(0, "", Mode::Hidden)
    }

    fn with_mode(total: usize, what: &str, mode: Mode) -> Progress {
        Progress {
            what: what.to_string(),
            total,
            done: 0,
            start_done: 0,
            start: Instant::now(),
            mode,
            last_shown: None,
            line_open: false,
            finished: false,
        }
    }

    /// Starts the count at `k` items already done (a resumed run); the rate and ETA are
    /// measured on the items done from now on.
    pub fn with_done(mut self, k: usize) -> Progress {
        self.done = k;
        self.start_done = k;
        self
    }

    pub fn done(&self) -> usize {
        self.done
    }

    pub fn total(&self) -> usize {
        self.total
    }

    /// Counts `n` more items done and updates the display when due.
    pub fn inc(&mut self, n: usize) {
        self.done += n;
        let now = Instant::now();
        let due = match (self.mode, self.last_shown) {
            (Mode::Hidden, _) => false,
            (_, None) => true,
            (Mode::Terminal, Some((t, _))) => {
                now.duration_since(t) >= REDRAW || self.done >= self.total
            }
            (Mode::Plain, Some((t, at))) => {
                plain_due(at, self.done, self.total, now.duration_since(t))
            }
        };
        if due {
            self.show(now, false);
        }
    }

    /// Prints a message on its own line without garbling the progress line.
    pub fn println(&mut self, message: &str) {
        let mut err = std::io::stderr().lock();
        if self.line_open {
            let _ = write!(err, "\r\x1b[K{message}\n");
            drop(err);
            self.show(Instant::now(), false);
        } else {
            let _ = writeln!(err, "{message}");
        }
    }

    /// Shows the final count and ends the line.
    pub fn finish(&mut self) {
        if self.finished {
            return;
        }
        self.finished = true;
        if self.mode == Mode::Hidden {
            return;
        }
        let shown_now = matches!(self.last_shown, Some((_, at)) if at == self.done);
        if self.mode == Mode::Terminal || !shown_now {
            self.show(Instant::now(), true);
        }
        self.end_line();
    }

    fn show(&mut self, now: Instant, last: bool) {
        let line = format!(
            "{} {}",
            self.what,
            render(
                self.done,
                self.total,
                now.duration_since(self.start),
                self.done - self.start_done
            )
        );
        let mut err = std::io::stderr().lock();
        let _ = match self.mode {
            Mode::Hidden => return,
            Mode::Terminal => {
                self.line_open = !last;
                write!(err, "\r{line}\x1b[K{}", if last { "\n" } else { "" })
            }
            Mode::Plain => writeln!(err, "{line}"),
        };
        let _ = err.flush();
        self.last_shown = Some((now, self.done));
    }

    fn end_line(&mut self) {
        if self.line_open {
            let _ = writeln!(std::io::stderr());
            self.line_open = false;
        }
    }
}

impl Drop for Progress {
    /// An abandoned run (an error on the way) still ends its terminal line, so the error
    /// message starts on a line of its own.
    fn drop(&mut self) {
        self.end_line();
    }
}

/// Whether a plain (non-terminal) line is due: the count crossed into a new 10 % step since
/// the last line, or 30 s passed with new work.
fn plain_due(shown_at: usize, done: usize, total: usize, since: Duration) -> bool {
    if done == shown_at {
        return false;
    }
    let step = |k: usize| k.min(total) * 10 / total.max(1);
    step(done) > step(shown_at) || since >= PLAIN_EVERY
}

/// One progress line (without the label): bar, `done/total`, percentage, rate, elapsed time
/// and ETA. `new_done` is the part of `done` finished in `elapsed` (a resumed run starts
/// with items already done); the rate is `new_done / elapsed`, shown as items/s, or s/item
/// when below one item a second.
pub fn render(done: usize, total: usize, elapsed: Duration, new_done: usize) -> String {
    let frac = if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64).min(1.0)
    };
    let filled = (frac * BAR_WIDTH as f64).floor() as usize;
    let mut bar = "=".repeat(filled);
    if filled < BAR_WIDTH {
        bar.push(if filled > 0 { '>' } else { ' ' });
        bar.push_str(&" ".repeat(BAR_WIDTH - filled - 1));
    }
    let secs = elapsed.as_secs_f64();
    let rate = (new_done > 0 && secs > 0.0).then(|| new_done as f64 / secs);
    let rate_text = match rate {
        Some(r) if r >= 1.0 => format!("{r:.2} it/s"),
        Some(r) => format!("{:.2} s/it", 1.0 / r),
        None => "-- it/s".to_string(),
    };
    let left = total.saturating_sub(done);
    let eta = match rate {
        _ if left == 0 => clock(0.0),
        Some(r) => clock(left as f64 / r),
        None => "--".to_string(),
    };
    format!(
        "[{bar}] {done}/{total} {pct:>3.0}% {rate_text} elapsed {} eta {eta}",
        clock(secs),
        pct = frac * 100.0,
    )
}

/// `m:ss`, or `h:mm:ss` from an hour up.
fn clock(secs: f64) -> String {
    let s = secs.max(0.0).round() as u64;
    let (h, m, s) = (s / 3600, s / 60 % 60, s % 60);
    if h > 0 {
        format!("{h}:{m:02}:{s:02}")
    } else {
        format!("{m}:{s:02}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_fast_and_slow_rates() {
        assert_eq!(
            render(50, 200, Duration::from_secs(10), 50),
            "[======>                 ] 50/200  25% 5.00 it/s elapsed 0:10 eta 0:30"
        );
        assert_eq!(
            render(3, 10, Duration::from_secs(12), 3),
            "[=======>                ] 3/10  30% 4.00 s/it elapsed 0:12 eta 0:28"
        );
    }

    #[test]
    fn render_resumed_run_counts_only_new_work() {
        // 90 of 100 done, 80 of them before this run; 10 in 20 s -> 2 s/it, 10 left -> 20 s.
        assert_eq!(
            render(90, 100, Duration::from_secs(20), 10),
            "[=====================>  ] 90/100  90% 2.00 s/it elapsed 0:20 eta 0:20"
        );
        // Nothing new yet: no rate, no ETA.
        assert_eq!(
            render(80, 100, Duration::from_secs(3), 0),
            "[===================>    ] 80/100  80% -- it/s elapsed 0:03 eta --"
        );
    }

    #[test]
    fn render_edges() {
        assert_eq!(
            render(0, 0, Duration::ZERO, 0),
            "[========================] 0/0 100% -- it/s elapsed 0:00 eta 0:00"
        );
        assert_eq!(
            render(0, 5, Duration::ZERO, 0),
            "[                        ] 0/5   0% -- it/s elapsed 0:00 eta --"
        );
        let long = render(1, 3, Duration::from_secs(3725), 1);
        assert!(
            long.ends_with("3725.00 s/it elapsed 1:02:05 eta 2:04:10"),
            "{long}"
        );
    }

    #[test]
    fn plain_lines_every_ten_percent_or_thirty_seconds() {
        let s = Duration::from_secs(1);
        assert!(!plain_due(0, 9, 100, s));
        assert!(plain_due(9, 10, 100, s));
        assert!(!plain_due(10, 19, 100, s));
        assert!(plain_due(19, 25, 100, s));
        assert!(plain_due(3, 4, 100, PLAIN_EVERY));
        assert!(!plain_due(4, 4, 100, PLAIN_EVERY));
        assert!(plain_due(0, 1, 3, s));
    }

    #[test]
    fn hidden_counts_silently() {
        let mut p = Progress::hidden().with_done(4);
        p.inc(2);
        p.finish();
        p.finish();
        assert_eq!(p.done(), 6);
        assert!(p.last_shown.is_none());
    }
}
