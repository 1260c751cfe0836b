//! The helper threads that split a large integer product: one process-wide pool of parked threads, started
//! once, that run the chunks of whichever products are in flight. A product posts a job that lives on the
//! caller's stack (a closure over chunk indices and two counters), runs chunks itself, and waits for the
//! helpers' chunks to finish; nothing is allocated per product once the pool has started (`Mutex` and
//! `Condvar` are futexes, and the list of jobs in flight keeps its capacity).

// `unsafe` only to hand helpers a job that lives on the caller's stack, which the caller outlives by
// waiting for every chunk, and to split the output into the chunks' disjoint ranges.
#![allow(unsafe_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Condvar, Mutex, MutexGuard, OnceLock};

/// Most products in flight at once that may share the helpers; a product posted beyond it runs on its
/// caller alone (same results, no allocation).
const MAX_JOBS: usize = 64;

/// One product's chunks: `run(i)` for every `i < chunks`, each claimed exactly once.
struct Job {
    run: *const (dyn Fn(usize) + Sync),
    chunks: usize,
    /// Chunks claimed and finished so far; guarded by the pool's mutex.
    claimed: usize,
    finished: usize,
    panicked: bool,
}

/// A job posted to the pool. The caller keeps the job alive until every chunk it handed out has finished,
/// and all fields are read and written under the pool's mutex, so sending the pointer is sound.
#[derive(Clone, Copy)]
struct Posted(*mut Job);
// SAFETY: see `Posted`: the pointee outlives every use, and every access holds the pool's mutex.
unsafe impl Send for Posted {}

struct Pool {
    /// Jobs with chunks left to claim.
    jobs: Mutex<Vec<Posted>>,
    /// Signalled when a job is posted.
    work: Condvar,
    /// Signalled when a chunk finishes.
    done: Condvar,
}

fn lock(jobs: &Mutex<Vec<Posted>>) -> MutexGuard<'_, Vec<Posted>> {
    // A chunk's panic is caught outside the lock, so the mutex is never poisoned by one; take it anyway.
    jobs.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Claims the next chunk of `job` (under the lock), dropping the job from the list once all are claimed.
fn claim(list: &mut Vec<Posted>, at: usize) -> (Posted, usize) {
    let posted = list[at];
    // SAFETY: `posted` is in the list, so its caller is still waiting on it; the lock is held.
    let job = unsafe { &mut *posted.0 };
    let chunk = job.claimed;
    job.claimed += 1;
    if job.claimed == job.chunks {
        list.swap_remove(at);
    }
    (posted, chunk)
}

/// Runs one claimed chunk and records that it finished (waking the caller).
fn run_chunk(pool: &Pool, posted: Posted, chunk: usize) {
    // SAFETY: the chunk is claimed and not finished, so the caller still waits and the closure lives.
    let run = unsafe { &*(*posted.0).run };
    let ok = catch_unwind(AssertUnwindSafe(|| run(chunk))).is_ok();
    let _guard = lock(&pool.jobs);
    // SAFETY: as above, under the lock.
    let job = unsafe { &mut *posted.0 };
    job.finished += 1;
    job.panicked |= !ok;
    if job.finished == job.chunks {
        pool.done.notify_all();
    }
}

fn helper(pool: &'static Pool) {
    loop {
        let mut list = lock(&pool.jobs);
        while list.is_empty() {
            list = pool.work.wait(list).unwrap_or_else(|p| p.into_inner());
        }
        let (posted, chunk) = claim(&mut list, 0);
        drop(list);
        run_chunk(pool, posted, chunk);
    }
}

/// The pool, with `helpers` threads started on the first call (the cores less the caller); if the system
/// refuses a thread, products run with fewer helpers.
fn pool(helpers: usize) -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    static STARTED: OnceLock<()> = OnceLock::new();
    let pool = POOL.get_or_init(|| Pool {
        jobs: Mutex::new(Vec::with_capacity(MAX_JOBS)),
        work: Condvar::new(),
        done: Condvar::new(),
    });
    STARTED.get_or_init(|| {
        for i in 0..helpers {
            let spawned = std::thread::Builder::new()
                .name(format!("int8-{i}"))
                .spawn(move || helper(pool));
            if spawned.is_err() {
                break;
            }
        }
    });
    pool
}

/// Runs `run(i)` for every `i < chunks`, on the calling thread and the pool's `helpers` threads (started on
/// the first call), and returns when all have finished. A panic in a chunk is raised again here.
pub(crate) fn run_chunks(chunks: usize, helpers: usize, run: &(dyn Fn(usize) + Sync)) {
    if chunks <= 1 || helpers == 0 {
        return (0..chunks).for_each(run);
    }
    let pool = pool(helpers);
    // SAFETY (lifetime erasure): this function does not return before every chunk has finished, so no
    // helper uses `run` after it.
    let run: *const (dyn Fn(usize) + Sync + '_) = run;
    let run: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(run) };
    let mut job = Job {
        run,
        chunks,
        claimed: 0,
        finished: 0,
        panicked: false,
    };
    let posted = Posted(&mut job);
    {
        let mut list = lock(&pool.jobs);
        if list.len() == list.capacity() {
            drop(list);
            // SAFETY: not posted; `run` is still borrowed from the caller.
            return (0..chunks).for_each(|i| unsafe { (*job.run)(i) });
        }
        list.push(posted);
        pool.work.notify_all();
    }
    loop {
        let mut list = lock(&pool.jobs);
        let Some(at) = list.iter().position(|p| std::ptr::eq(p.0, posted.0)) else {
            break;
        };
        let (_, chunk) = claim(&mut list, at);
        drop(list);
        run_chunk(pool, posted, chunk);
    }
    let mut list = lock(&pool.jobs);
    loop {
        // SAFETY: read under the lock.
        if unsafe { (*posted.0).finished } >= chunks {
            break;
        }
        list = pool.done.wait(list).unwrap_or_else(|p| p.into_inner());
    }
    drop(list);
    if job.panicked {
        panic!("a chunk of a parallel int8 product panicked");
    }
}

/// Calls `f(i, chunk)` for the `i`-th `chunk_len` values of `out` (the last chunk may be shorter), the
/// chunks spread over the calling thread and the pool's helpers as in [`run_chunks`].
pub(crate) fn for_each_chunk_mut(
    out: &mut [f32],
    chunk_len: usize,
    helpers: usize,
    f: &(dyn Fn(usize, &mut [f32]) + Sync),
) {
    let (total, base) = (out.len(), OutPtr(out.as_mut_ptr()));
    let chunks = total.div_ceil(chunk_len.max(1));
    run_chunks(chunks, helpers, &|i| {
        let start = i * chunk_len;
        let len = chunk_len.min(total - start);
        // SAFETY: `run_chunks` runs each index once, so the ranges are disjoint and inside `out`, which
        // stays borrowed until every chunk has finished.
        let chunk = unsafe { std::slice::from_raw_parts_mut(base.get().add(start), len) };
        f(i, chunk);
    });
}

/// The output's base pointer, shared by the chunks of one call (each writes its own range).
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);
// SAFETY: only used by `for_each_chunk_mut`, whose chunks write disjoint ranges.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}
impl OutPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_chunk_runs_once_even_with_concurrent_callers() {
        std::thread::scope(|s| {
            for t in 0..6 {
                s.spawn(move || {
                    for round in 0..50 {
                        let chunks = 1 + (t + round) % 7;
                        let hits: Vec<AtomicUsize> =
                            (0..chunks).map(|_| AtomicUsize::new(0)).collect();
                        run_chunks(chunks, 3, &|i| {
                            hits[i].fetch_add(1, Ordering::Relaxed);
                        });
                        assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
                    }
                });
            }
        });
    }
}
