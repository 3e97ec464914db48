//! Thread pools and panic containment for the parallel sections.
//!
//! `n_threads = None` uses rayon's global pool (sized by `RAYON_NUM_THREADS` or the core
//! count); `Some(n)` uses a pool of exactly n threads, built once and cached, so repeated calls
//! (one beam search per batch) do not pay for thread start-up. The cache keeps the
//! [`MAX_CACHED_POOLS`] most recently used sizes; an older pool's threads end once no call
//! holds it, so a program cycling through thread counts does not run out of threads. Every
//! parallel section runs under `catch_unwind`: a panic becomes `JtmError::Internal` instead of
//! aborting the caller.
//!
//! Thread pools do not survive `fork()`: a forked child inherits the pools' bookkeeping but
//! none of their threads, and would wait forever for them. Pools remember the process that
//! built them; a child builds its own (and, instead of rayon's global pool once the parent
//! has used it, a cached pool of the same size).
//!
//! A pool as wide as the CPUs the process may use pins each worker to one of them
//! ([`crate::thread_affinity`]): the cached pools, and the global pool where
//! [`build_global_pool`] built it (the Python module does on import).

use crate::error::{JtmError, Result};
use crate::thread_affinity::{pin_current_thread, pool_cpus};
use rayon::{ThreadPool, ThreadPoolBuilder};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, OnceLock};

/// Thread pools of distinct sizes kept alive between calls.
pub const MAX_CACHED_POOLS: usize = 4;

/// The process that built the pools, and (size, pool), most recently used last.
type PoolCache = Mutex<(u32, Vec<(usize, Arc<ThreadPool>)>)>;

fn cached_pool(n_threads: usize) -> Result<Arc<ThreadPool>> {
    static POOLS: OnceLock<PoolCache> = OnceLock::new();
    let pid = std::process::id();
    let cache = POOLS.get_or_init(|| Mutex::new((pid, Vec::new())));
    let mut cache = cache.lock().unwrap_or_else(|p| p.into_inner());
    if cache.0 != pid {
        // A forked child: the parent's pools have no threads here. Forget them (dropping one
        // would signal threads that do not exist) and build new ones.
        std::mem::forget(std::mem::take(&mut cache.1));
        cache.0 = pid;
    }
    let pools = &mut cache.1;
    if let Some(i) = pools.iter().position(|(n, _)| *n == n_threads) {
        let hit = pools.remove(i);
        let pool = hit.1.clone();
        pools.push(hit);
        return Ok(pool);
    }
    let pool = builder(n_threads, "jtm-rs").build().map_err(|e| {
        JtmError::Internal(format!("cannot start a pool of {n_threads} threads: {e}"))
    })?;
    let pool = Arc::new(pool);
    if pools.len() == MAX_CACHED_POOLS {
        pools.remove(0);
    }
    pools.push((n_threads, pool.clone()));
    Ok(pool)
}

/// Builds rayon's global pool (`n_threads = None`) now, its workers pinned as a cached pool's
/// are when it is as wide as the allowed CPUs (the default); whether this call built it (a
/// pool built already, by an earlier call or a first parallel section, is left as it is).
pub fn build_global_pool() -> bool {
    builder(global_pool_size(), "jtm-rs-global")
        .build_global()
        .is_ok()
}

/// A pool of `n_threads` named `{name}-{i}`, pinned where [`pool_cpus`] says.
fn builder(n_threads: usize, name: &'static str) -> ThreadPoolBuilder {
    let b = ThreadPoolBuilder::new()
        .num_threads(n_threads)
        .thread_name(move |i| format!("{name}-{i}"));
    match pool_cpus(n_threads) {
        Some(cpus) => b.start_handler(move |i| {
            pin_current_thread(cpus[i % cpus.len()]);
        }),
        None => b,
    }
}

/// Runs `f` on the requested pool, turning a panic into `JtmError::Internal`.
pub fn run<R: Send>(n_threads: Option<usize>, f: impl FnOnce() -> Result<R> + Send) -> Result<R> {
    let outcome = match n_threads {
        Some(0) => {
            return Err(JtmError::InvalidArgument(
                "n_threads must be at least 1".into(),
            ))
        }
        Some(n) => {
            let pool = cached_pool(n)?;
            catch_unwind(AssertUnwindSafe(|| pool.install(f)))
        }
        None => {
            static GLOBAL_POOL_PID: OnceLock<u32> = OnceLock::new();
            if *GLOBAL_POOL_PID.get_or_init(std::process::id) == std::process::id() {
                catch_unwind(AssertUnwindSafe(f))
            } else {
                // Forked after the parent used rayon's global pool, which cannot be rebuilt.
                let pool = cached_pool(global_pool_size())?;
                catch_unwind(AssertUnwindSafe(|| pool.install(f)))
            }
        }
    };
    outcome.unwrap_or_else(panic_error)
}

/// [`run`], or with `here` on the calling thread (a panic still becomes
/// `JtmError::Internal`): for sections too small to repay handing them to a pool's thread and
/// waiting for it (one user's beam-search level, where the hand-offs cost more than the work).
pub fn run_sized<R: Send>(
    n_threads: Option<usize>,
    here: bool,
    f: impl FnOnce() -> Result<R> + Send,
) -> Result<R> {
    if here && n_threads != Some(0) {
        catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(panic_error)
    } else {
        run(n_threads, f)
    }
}

fn panic_error<R>(panic: Box<dyn std::any::Any + Send>) -> Result<R> {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    Err(JtmError::Internal(msg))
}

/// What rayon's global pool would hold: `RAYON_NUM_THREADS`, else the available cores.
fn global_pool_size() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sized_pool_runs_with_that_many_threads() {
        assert_eq!(
            run(Some(2), || Ok(rayon::current_num_threads())).unwrap(),
            2
        );
        assert_eq!(
            run(Some(1), || Ok(rayon::current_num_threads())).unwrap(),
            1
        );
    }

    #[test]
    fn a_pool_as_wide_as_the_cpus_pins_one_worker_to_each() {
        let cpus = crate::thread_affinity::allowed_cpus();
        if cpus.len() < 2 || std::env::var("JTM_RS_PIN_THREADS").is_ok() {
            return;
        }
        let masks = run(Some(cpus.len()), || {
            Ok(rayon::broadcast(|_| crate::thread_affinity::allowed_cpus()))
        })
        .unwrap();
        let mut pinned: Vec<usize> = masks
            .iter()
            .map(|m| {
                assert_eq!(m.len(), 1, "a worker may run on {m:?}");
                m[0]
            })
            .collect();
        pinned.sort_unstable();
        assert_eq!(pinned, cpus);
        // A narrower pool floats.
        let one = run(Some(1), || Ok(crate::thread_affinity::allowed_cpus())).unwrap();
        assert_eq!(one, cpus);
    }

    #[test]
    fn cycling_through_thread_counts_does_not_exhaust_threads() {
        // Each distinct size used to keep its pool (and threads) forever.
        for round in 0..2 {
            for n in 1..=64 {
                assert_eq!(
                    run(Some(n), || Ok(rayon::current_num_threads())).unwrap(),
                    n,
                    "round {round}"
                );
            }
        }
    }

    #[test]
    fn panic_becomes_internal_error() {
        let r: Result<()> = run(Some(1), || panic!("boom"));
        assert!(matches!(r, Err(JtmError::Internal(m)) if m.contains("boom")));
        assert!(run(Some(0), || Ok(())).is_err());
    }
}
