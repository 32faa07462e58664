//! The threads that run the parallel parts of a compiled step.
//!
//! A step calls many short parallel kernels in a row (a product, a loop, the
//! next product), often tens of microseconds apart. A worker that went to
//! sleep between them needs a futex wake-up, which costs tens of
//! microseconds on a virtual machine; rayon's workers fall asleep quickly.
//! A team's workers spin for a while after each part instead, and only then
//! park, so the next part starts within a microsecond.
//!
//! One team per thread count, made on first use. A team runs one job at a
//! time: a job submitted while another runs (another session on another
//! thread, or a part that is itself parallel) runs on its caller alone.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, TryLockError};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// How long an idle worker spins before it parks: longer than the gaps
/// between the parallel kernels of a step, short enough not to hold a core
/// between steps of a program that does other work.
const SPIN: Duration = Duration::from_micros(300);

/// A job's parts: `f(i)` for each part `i`.
type Job = *const (dyn Fn(usize) + Sync);

struct Shared {
    /// epoch (32 bits) | parts (16 bits) | next unclaimed part (16 bits).
    claim: AtomicU64,
    /// Parts finished in the current epoch.
    done: AtomicUsize,
    /// Workers parked or about to park.
    sleepers: AtomicUsize,
    /// The current job; written only while no part of the previous job can
    /// still be running, read only by a worker holding a claimed part.
    job: UnsafeCell<Option<Job>>,
    /// The first panic of a part of the current job, resumed by the
    /// submitter once every part has finished.
    panic: Mutex<Option<Box<dyn std::any::Any + Send>>>,
}

// SAFETY: `job` is written by the submitting thread only between jobs, when
// every part has finished, and read only by workers that claimed a part of the
// current epoch (the claim's Acquire orders it after the write).
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

pub struct Team {
    shared: Arc<Shared>,
    workers: Vec<Thread>,
    /// Held while a job runs.
    busy: Mutex<()>,
}

const PART_BITS: u32 = 16;
const MAX_PARTS: usize = (1 << PART_BITS) - 1;

fn epoch(c: u64) -> u64 {
    c >> (2 * PART_BITS)
}
fn parts(c: u64) -> usize {
    ((c >> PART_BITS) & MAX_PARTS as u64) as usize
}
fn next(c: u64) -> usize {
    (c & MAX_PARTS as u64) as usize
}

impl Team {
    fn new(threads: usize) -> Option<Team> {
        let shared = Arc::new(Shared {
            claim: AtomicU64::new(0),
            done: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            job: UnsafeCell::new(None),
            panic: Mutex::new(None),
        });
        let mut workers = Vec::new();
        for i in 1..threads {
            let s = Arc::clone(&shared);
            let handle = std::thread::Builder::new()
                .name(format!("nnc-{i}"))
                .spawn(move || work(&s, 0))
                .ok()?;
            workers.push(handle.thread().clone());
        }
        Some(Team {
            shared,
            workers,
            busy: Mutex::new(()),
        })
    }

    /// Runs `f(i)` for every `i < parts`, on the caller and the workers;
    /// returns when all have finished.
    fn run(&self, parts: usize, f: &(dyn Fn(usize) + Sync)) {
        let _guard = match self.busy.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                (0..parts).for_each(f);
                return;
            }
        };
        let s = &*self.shared;
        // SAFETY: no part of the previous job is running (it returned only
        // after all finished), so no worker reads `job` now; the pointer is
        // used only until this call returns, while `f` is alive.
        unsafe {
            let job: Job = std::mem::transmute::<&(dyn Fn(usize) + Sync), Job>(f);
            *s.job.get() = Some(job);
        }
        s.done.store(0, Ordering::Relaxed);
        let old = s.claim.load(Ordering::Relaxed);
        let fresh = ((epoch(old) + 1) << (2 * PART_BITS)) | ((parts as u64) << PART_BITS);
        s.claim.store(fresh, Ordering::SeqCst);
        if s.sleepers.load(Ordering::SeqCst) > 0 {
            for w in &self.workers {
                w.unpark();
            }
        }
        claim_parts(s, epoch(fresh));
        // Every part must finish before `f` (and what it borrows) goes away,
        // even when one panicked: only then is the panic passed on.
        while s.done.load(Ordering::Acquire) < parts {
            std::hint::spin_loop();
        }
        let panic = match s.panic.lock() {
            Ok(mut p) => p.take(),
            Err(poisoned) => poisoned.into_inner().take(),
        };
        if let Some(payload) = panic {
            std::panic::resume_unwind(payload);
        }
    }
}

/// Claims and runs parts of epoch `e` until none is left.
fn claim_parts(s: &Shared, e: u64) {
    let mut c = s.claim.load(Ordering::Acquire);
    loop {
        if epoch(c) != e || next(c) >= parts(c) {
            return;
        }
        match s
            .claim
            .compare_exchange_weak(c, c + 1, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => {
                // SAFETY: this part of epoch `e` is claimed and unfinished, so
                // the job is the one written before `e` was published and its
                // submitter is still waiting.
                let part = next(c);
                let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
                    if let Some(job) = *s.job.get() {
                        (*job)(part);
                    }
                }));
                if let Err(payload) = ran {
                    let mut slot = match s.panic.lock() {
                        Ok(p) => p,
                        Err(poisoned) => poisoned.into_inner(),
                    };
                    slot.get_or_insert(payload);
                }
                s.done.fetch_add(1, Ordering::Release);
                c = s.claim.load(Ordering::Acquire);
            }
            Err(now) => c = now,
        }
    }
}

/// A worker: waits for each epoch after `seen` (spinning, then parked) and
/// helps. It starts from the team's first epoch, so a job submitted before
/// the thread ran is still joined.
fn work(s: &Shared, mut seen: u64) {
    loop {
        let since = Instant::now();
        let mut spins = 0u32;
        let e = loop {
            let e = epoch(s.claim.load(Ordering::Acquire));
            if e != seen {
                break e;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(1024) || since.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            s.sleepers.fetch_add(1, Ordering::SeqCst);
            if epoch(s.claim.load(Ordering::SeqCst)) == seen {
                std::thread::park();
            }
            s.sleepers.fetch_sub(1, Ordering::SeqCst);
        };
        seen = e;
        claim_parts(s, e);
    }
}

/// Runs `f(i)` for `i < parts` on up to `threads` threads (the caller and a
/// team's workers); in order on the caller when one thread, one part, or no
/// team can be started.
pub fn parallel_for(threads: usize, parts: usize, f: impl Fn(usize) + Sync) {
    if threads <= 1 || parts <= 1 || parts > MAX_PARTS {
        (0..parts).for_each(f);
        return;
    }
    match team(threads) {
        Some(t) => t.run(parts, &f),
        None => (0..parts).for_each(f),
    }
}

/// The team of `threads` threads (the caller counts as one), made once;
/// found without a lock, since every parallel kernel asks. (More than 256
/// threads: the caller runs the parts alone.)
fn team(threads: usize) -> Option<&'static Team> {
    const MOST: usize = 256;
    static TEAMS: [OnceLock<Option<Team>>; MOST + 1] = [const { OnceLock::new() }; MOST + 1];
    TEAMS
        .get(threads)?
        .get_or_init(|| Team::new(threads))
        .as_ref()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    #[test]
    fn every_part_runs_once() {
        for parts in [1, 2, 3, 7, 64] {
            let hits: Vec<AtomicU32> = (0..parts).map(|_| AtomicU32::new(0)).collect();
            parallel_for(2, parts, |i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
        }
    }

    #[test]
    fn a_panicking_part_reaches_the_submitter_after_all_parts_finish() {
        let team = Team::new(2).expect("a worker thread starts");
        for panicking in [0, 1] {
            let finished = AtomicU32::new(0);
            let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                team.run(2, &|i| {
                    if i == panicking {
                        panic!("part {i}");
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    finished.fetch_add(1, Ordering::SeqCst);
                })
            }));
            assert!(caught.is_err());
            // The other part had finished before the panic was passed on.
            assert_eq!(finished.load(Ordering::SeqCst), 1);
        }
        // The team still runs jobs afterwards, with its worker.
        let total = AtomicU32::new(0);
        team.run(4, &|_| {
            total.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(total.load(Ordering::SeqCst), 4);
    }

    #[test]
    fn nested_and_concurrent_jobs_finish() {
        let total = AtomicU32::new(0);
        std::thread::scope(|sc| {
            for _ in 0..3 {
                sc.spawn(|| {
                    for _ in 0..200 {
                        parallel_for(2, 4, |_| {
                            parallel_for(2, 3, |_| {
                                total.fetch_add(1, Ordering::Relaxed);
                            });
                        });
                    }
                });
            }
        });
        assert_eq!(total.load(Ordering::Relaxed), 3 * 200 * 4 * 3);
    }

    #[test]
    fn jobs_after_a_pause_wake_parked_workers() {
        // A team of its own: the shared one may be busy with other tests,
        // and a busy team runs jobs on their caller alone.
        let team = Team::new(2).expect("a worker thread starts");
        for _ in 0..3 {
            std::thread::sleep(SPIN * 3);
            // Each part waits for the other: the job can only finish in
            // time if a parked worker woke and took a part.
            let arrived = AtomicU32::new(0);
            let met = AtomicU32::new(0);
            team.run(2, &|_| {
                arrived.fetch_add(1, Ordering::SeqCst);
                let since = Instant::now();
                while arrived.load(Ordering::SeqCst) < 2
                    && since.elapsed() < Duration::from_secs(10)
                {
                    std::hint::spin_loop();
                }
                if arrived.load(Ordering::SeqCst) == 2 {
                    met.fetch_add(1, Ordering::SeqCst);
                }
            });
            assert_eq!(met.load(Ordering::SeqCst), 2);
        }
    }
}
