//! Where a warm execution's time goes, from what the engine already reports: a
//! [`PhaseRecorder`] installed as the engine's observer (`EngineConfig::observer`, the
//! hook the server's `GET /metrics` histograms are fed from) keeps the durations of the
//! execution in flight — its wait for a `maxConcurrent` slot, the sandbox taken from the
//! pool, and the run from sending it to the sandbox until it ended — and the bench joins
//! them with the end-to-end time it measured and the program's own `durationMs`.
//!
//! It also counts the executions between "sandbox acquired" and "run finished" at once,
//! so a throughput measurement can show it never ran more than `maxConcurrent`.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use isol8::stats::EngineObserver;
use serde::Serialize;

use crate::{mean, median, ms};

/// The engine-reported phases of the last execution, ms (absent: not reported).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reported {
    /// Wait for a `maxConcurrent` slot.
    pub queue_wait_ms: Option<f64>,
    /// Taking a sandbox from the warm pool (or starting one on a miss).
    pub acquire_ms: Option<f64>,
    /// From sending the exec frame to the sandbox until the execution ended.
    pub run_ms: Option<f64>,
    /// The program's own time as the agent timed it (microsecond resolution).
    pub program_ms: Option<f64>,
}

/// An [`EngineObserver`] keeping the phases of the execution in flight (for sequential
/// executions) and the peak of executions running at once (for concurrent ones).
#[derive(Debug, Default)]
pub struct PhaseRecorder {
    last: Mutex<Reported>,
    running: AtomicUsize,
    peak: AtomicUsize,
}

impl PhaseRecorder {
    /// A recorder to install as `EngineConfig::observer` (clone the `Arc` to read it).
    pub fn new() -> Arc<PhaseRecorder> {
        Arc::new(PhaseRecorder::default())
    }

    /// The phases reported since the last call, and forgets them.
    pub fn take(&self) -> Reported {
        std::mem::take(&mut *self.last.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Most executions seen between "sandbox acquired" and "run finished" at once.
    pub fn peak_running(&self) -> usize {
        self.peak.load(Ordering::SeqCst)
    }

    fn with(&self, f: impl FnOnce(&mut Reported)) {
        f(&mut self.last.lock().unwrap_or_else(PoisonError::into_inner));
    }
}

impl EngineObserver for PhaseRecorder {
    fn queue_wait(&self, waited: Duration) {
        self.with(|r| r.queue_wait_ms = Some(ms(waited)));
    }

    fn sandbox_acquired(&self, _runtime: &str, took: Duration, _warm: bool) {
        self.with(|r| r.acquire_ms = Some(ms(took)));
        let now = self.running.fetch_add(1, Ordering::SeqCst) + 1;
        self.peak.fetch_max(now, Ordering::SeqCst);
    }

    fn program_finished(&self, _runtime: &str, took: Duration) {
        self.with(|r| r.program_ms = Some(ms(took)));
    }

    fn run_finished(&self, _runtime: &str, took: Duration) {
        self.with(|r| r.run_ms = Some(ms(took)));
        // Saturating: a run whose sandbox was replaced is acquired once, finished once.
        let _ = self
            .running
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
    }
}

/// One sequential warm execution split into phases, ms.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PhaseSample {
    /// End to end, as the caller of `execute` saw it.
    pub total_ms: f64,
    /// The program's own `durationMs` from the result.
    pub program_ms: f64,
    /// What the engine reported.
    pub reported: Reported,
}

impl PhaseSample {
    /// `sample` (end to end and the program's time, 0 where unknown) with the phases
    /// the engine `reported` for it.
    pub fn of(sample: &crate::Sample, reported: Reported) -> PhaseSample {
        PhaseSample {
            total_ms: sample.total_ms,
            program_ms: sample.program_ms.unwrap_or(0.0),
            reported,
        }
    }
}

/// Median and mean of one phase over the samples, ms.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseStat {
    /// `end_to_end`, `queue_wait`, `sandbox_acquire`, `run`, `program`, `in_run_overhead`
    /// (`run` − `program`: the exec frame out, the agent starting and reaping the program,
    /// the frames back) or `around_run` (`end_to_end` − `queue_wait` − `sandbox_acquire`
    /// − `run`: preparing the request, assembling the result, handing the sandbox back).
    pub phase: String,
    /// Median over the samples, ms.
    pub median_ms: f64,
    /// Mean over the samples, ms (the means of the parts add up to the mean end to end).
    pub mean_ms: f64,
}

/// The phases of one runtime's warm path.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseTimings {
    /// Runtime.
    pub runtime: String,
    /// The measured path (`warm`).
    pub path: String,
    /// Samples that had every phase reported.
    pub n: usize,
    /// Per phase, in the order of [`PhaseStat::phase`]'s list.
    pub phases: Vec<PhaseStat>,
}

impl PhaseTimings {
    /// The phase named `name`, if measured.
    pub fn get(&self, name: &str) -> Option<&PhaseStat> {
        self.phases.iter().find(|p| p.phase == name)
    }
}

/// Splits `samples` into phases; samples missing a reported phase are left out (`n`
/// says how many were used).
pub fn phase_timings(runtime: &str, path: &str, samples: &[PhaseSample]) -> PhaseTimings {
    /// A sample with every phase reported, ms.
    struct Full {
        total: f64,
        queue: f64,
        acquire: f64,
        run: f64,
        program: f64,
    }
    let full: Vec<Full> = samples
        .iter()
        .filter_map(|s| {
            let r = s.reported;
            Some(Full {
                total: s.total_ms,
                queue: r.queue_wait_ms?,
                acquire: r.acquire_ms?,
                run: r.run_ms?,
                program: s.program_ms,
            })
        })
        .collect();
    let column = |f: fn(&Full) -> f64| -> Vec<f64> { full.iter().map(f).collect() };
    let columns: [(&str, Vec<f64>); 7] = [
        ("end_to_end", column(|s| s.total)),
        ("queue_wait", column(|s| s.queue)),
        ("sandbox_acquire", column(|s| s.acquire)),
        ("run", column(|s| s.run)),
        ("program", column(|s| s.program)),
        ("in_run_overhead", column(|s| s.run - s.program)),
        (
            "around_run",
            column(|s| s.total - s.queue - s.acquire - s.run),
        ),
    ];
    PhaseTimings {
        runtime: runtime.to_string(),
        path: path.to_string(),
        n: full.len(),
        phases: if full.is_empty() {
            Vec::new()
        } else {
            columns
                .into_iter()
                .map(|(phase, values)| PhaseStat {
                    phase: phase.to_string(),
                    median_ms: median(values.clone()).unwrap_or(0.0),
                    mean_ms: mean(&values).unwrap_or(0.0),
                })
                .collect()
        },
    }
}

/// The parts of [`PhaseTimings`] that add up to the end-to-end time, with what each is
/// and what would shorten it. The program's part is told per runtime by [`program_part`].
pub const PARTS: [(&str, &str, &str); 5] = [
    (
        "program",
        "the program itself as the agent timed it: the interpreter starting (unless it was \
         pre-started), the code, the interpreter's exit",
        "a pre-started interpreter for this runtime (python, node and deno have one) or a faster \
         interpreter exit (see docs/PERFORMANCE.md, \"Where the time goes\")",
    ),
    (
        "in_run_overhead",
        "frames to and from the agent (over the data socket, or dockerd and the shim), \
         measuring, killing what the program left (for a pre-started program, the holder \
         of its memory, whose teardown then shares the cores), the exit frame",
        "fewer thread and process hand-offs between the engine, the agent and the program \
         (see docs/PERFORMANCE.md, \"Where the time goes\")",
    ),
    (
        "around_run",
        "preparing the request, assembling the result, handing the sandbox back",
        "less work in the engine before and after the run",
    ),
    (
        "sandbox_acquire",
        "taking a sandbox from the warm pool",
        "a pool that is refilled before the next request",
    ),
    (
        "queue_wait",
        "waiting for a maxConcurrent slot",
        "a larger maxConcurrent",
    ),
];

/// What the program's part is on a warm path of `runtime`, and what would shorten it:
/// `(what, fix)`. The built-in runtimes get what docs/PERFORMANCE.md ("Where the time
/// goes", "Known limits") measured of them on the bench's machine; any other runtime gets
/// the generic entry of [`PARTS`].
pub fn program_part(runtime: &str) -> (&'static str, &'static str) {
    match runtime {
        "python" => (
            "the program as the agent timed it: the code handed to the pre-started \
             interpreter and run, then its exit (about 1 ms of finalisation on the bench's \
             VM; the kernel frees the memory after the exit is reported)",
            "a Python that exits faster; an interpreter forked per execution from one that \
             already started would also cut the CPU each execution costs, but the runs it \
             served would share one hash secret and address layout (see \
             docs/PERFORMANCE.md, \"Where the time goes\")",
        ),
        "node" => (
            "the program as the agent timed it: Node.js evaluating the `-e` code in the \
             pre-started interpreter, creating `process.stdout` on first use, and its \
             exit (the kernel frees Node.js's memory after the exit is reported)",
            "a faster Node.js first evaluation and first write (see docs/PERFORMANCE.md, \
             \"Known limits\")",
        ),
        "deno" => (
            "the program as the agent timed it: Deno loading, transpiling and running \
             /sandbox/main.mts after its pre-started preload, and its exit",
            "a faster Deno module load and exit (see docs/PERFORMANCE.md, \"Known limits\")",
        ),
        "bun" => (
            "the program as the agent timed it: Bun starting, running the code and exiting \
             (Bun is not pre-started: it reads `-e` code from argv in native code, which no \
             preload can replace; it loads the teardown library, so the kernel frees its \
             memory after the exit is reported)",
            "a pre-start for Bun, which needs a way to hand it its `-e` code after start-up \
             (see docs/PERFORMANCE.md, \"Known limits\")",
        ),
        "bash" => (
            "the program as the agent timed it: executing bash, running the code and its \
             exit (bash is not pre-started: `eval` in a waiting bash would change its error \
             prefixes and `$BASH_EXECUTION_STRING`)",
            "nothing isol8 adds: most of it is creating the process (exec and dynamic \
             loading) and its exit, which every fresh process pays (see \
             docs/PERFORMANCE.md, \"Known limits\")",
        ),
        _ => (PARTS[0].1, PARTS[0].2),
    }
}

/// A closing note for one runtime: its mean end to end split into [`PARTS`] (means add
/// up, medians need not), the largest part, and what would shorten it. `None` when no
/// sample had every phase.
pub fn note(t: &PhaseTimings) -> Option<String> {
    let total = t.get("end_to_end")?.mean_ms;
    let mut parts: Vec<(&str, &str, &str, f64)> = PARTS
        .iter()
        .filter_map(|&(name, what, fix)| {
            let (what, fix) = match name {
                "program" => program_part(&t.runtime),
                _ => (what, fix),
            };
            Some((name, what, fix, t.get(name)?.mean_ms))
        })
        .collect();
    let split = parts
        .iter()
        .map(|(name, _, _, v)| format!("{name} {v:.2}"))
        .collect::<Vec<_>>()
        .join(" + ");
    parts.sort_by(|a, b| b.3.total_cmp(&a.3));
    let (name, what, fix, v) = parts.first()?;
    let share = if total > 0.0 { v / total * 100.0 } else { 0.0 };
    Some(format!(
        "{} {}: {total:.2} ms mean = {split}; largest: {name} ({share:.0}%), {what}; \
         would shrink with {fix}",
        t.runtime, t.path
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(total_ms: f64, program_ms: f64, q: f64, a: f64, run: f64) -> PhaseSample {
        PhaseSample {
            total_ms,
            program_ms,
            reported: Reported {
                queue_wait_ms: Some(q),
                acquire_ms: Some(a),
                run_ms: Some(run),
                program_ms: None,
            },
        }
    }

    #[test]
    fn phases_split_each_sample_and_the_means_of_the_parts_add_up() {
        let samples = [
            sample(10.0, 8.0, 0.0, 0.5, 9.0),
            sample(12.0, 9.0, 0.0, 1.0, 10.0),
            sample(20.0, 10.0, 1.0, 1.5, 14.0),
        ];
        let t = phase_timings("python", "warm", &samples);
        assert_eq!(t.n, 3);
        let get = |p: &str| t.get(p).unwrap_or_else(|| panic!("{p} missing")).clone();
        assert_eq!(get("end_to_end").median_ms, 12.0);
        assert_eq!(get("run").median_ms, 10.0);
        assert_eq!(get("program").median_ms, 9.0);
        // Per sample first: run − program is 1, 1, 4 → median 1, mean 2.
        assert_eq!(get("in_run_overhead").median_ms, 1.0);
        assert_eq!(get("in_run_overhead").mean_ms, 2.0);
        // around_run: 0.5, 1.0, 3.5.
        assert_eq!(get("around_run").median_ms, 1.0);
        let parts: f64 = [
            "queue_wait",
            "sandbox_acquire",
            "program",
            "in_run_overhead",
        ]
        .iter()
        .chain(["around_run"].iter())
        .map(|p| get(p).mean_ms)
        .sum();
        assert!((parts - get("end_to_end").mean_ms).abs() < 1e-9, "{parts}");
    }

    #[test]
    fn the_note_names_the_largest_part_and_what_would_shrink_it() {
        let t = phase_timings(
            "node",
            "warm",
            &[
                sample(50.0, 45.0, 0.0, 0.5, 48.0),
                sample(52.0, 45.0, 0.0, 0.5, 50.0),
            ],
        );
        let n = note(&t).expect("a note");
        assert!(
            n.starts_with("node warm: 51.00 ms mean = program 45.00 + in_run_overhead 4.00"),
            "{n}"
        );
        assert!(n.contains("largest: program (88%)"), "{n}");
        // The program's part is told per runtime; a runtime the bench knows nothing of
        // gets the generic entry.
        assert!(n.contains("creating `process.stdout` on first use"), "{n}");
        assert!(n.contains("a faster Node.js first evaluation"), "{n}");
        let t = phase_timings("ruby", "warm", &[sample(50.0, 45.0, 0.0, 0.5, 48.0)]);
        let n = note(&t).expect("a note");
        assert!(
            n.contains("a pre-started interpreter for this runtime"),
            "{n}"
        );
        for runtime in ["python", "node", "deno", "bun", "bash"] {
            assert_ne!(program_part(runtime).0, PARTS[0].1, "{runtime}");
        }
        // When the engine's part dominates, the note points at the hand-offs.
        let t = phase_timings("bash", "warm", &[sample(5.0, 1.0, 0.0, 0.1, 4.5)]);
        let n = note(&t).expect("a note");
        assert!(n.contains("largest: in_run_overhead (70%)"), "{n}");
        assert!(n.contains("fewer thread and process hand-offs"), "{n}");
        assert_eq!(note(&phase_timings("bash", "warm", &[])), None);
    }

    #[test]
    fn samples_missing_a_reported_phase_are_left_out() {
        let mut partial = sample(5.0, 1.0, 0.0, 0.1, 4.0);
        partial.reported.run_ms = None;
        let t = phase_timings("bash", "warm", &[partial, sample(3.0, 1.0, 0.0, 0.2, 2.5)]);
        assert_eq!(t.n, 1);
        assert_eq!(t.get("end_to_end").map(|p| p.median_ms), Some(3.0));
        let none = phase_timings("bash", "warm", &[partial]);
        assert_eq!(none.n, 0);
        assert!(none.phases.is_empty());
    }

    #[test]
    fn the_recorder_keeps_the_last_execution_and_the_peak_running() {
        let r = PhaseRecorder::new();
        r.queue_wait(Duration::from_micros(250));
        r.sandbox_acquired("python", Duration::from_millis(1), true);
        r.sandbox_acquired("python", Duration::from_millis(2), true);
        r.run_finished("python", Duration::from_millis(7));
        r.run_finished("python", Duration::from_millis(9));
        r.run_finished("python", Duration::from_millis(9)); // unmatched: no underflow
        r.sandbox_acquired("python", Duration::from_millis(1), true);
        assert_eq!(r.peak_running(), 2);
        let last = r.take();
        assert_eq!(last.queue_wait_ms, Some(0.25));
        assert_eq!(last.acquire_ms, Some(1.0));
        assert_eq!(last.run_ms, Some(9.0));
        assert_eq!(r.take(), Reported::default());
    }
}
