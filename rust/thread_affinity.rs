//! Which CPU each thread of a pool runs on.
//!
//! A pool's workers are woken one by one, the first by the caller's thread, the next by a
//! worker; Linux tends to place a woken thread on its waker's CPU ("wake affine") and moves it
//! only when its load balancer next runs. With as many workers as CPUs that often left two
//! workers on one core for a whole step: training on 2 cores ran 3 500 examples/s with the
//! lazy-Adam update and the fused pass on one pool, 5 600 with that pool's two workers pinned
//! one to a core (`benches/train_throughput.py`, docs/scale.md). So a pool with exactly as
//! many threads as the process may use CPUs pins worker `i` to the `i`-th of them; smaller
//! pools (ranks sharing a machine, a thread per request) float as before. `JTM_RS_PIN_THREADS=0`
//! turns it off.

/// The CPUs a pool of `n_threads` pins its workers to, in worker order, or `None` where it
/// leaves them to the scheduler.
pub fn pool_cpus(n_threads: usize) -> Option<Vec<usize>> {
    if n_threads < 2 || std::env::var("JTM_RS_PIN_THREADS").is_ok_and(|v| v.trim() == "0") {
        return None;
    }
    let cpus = allowed_cpus();
    (cpus.len() == n_threads).then_some(cpus)
}

/// The CPUs the calling thread may run on (empty where that cannot be read).
#[cfg(target_os = "linux")]
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return Vec::new();
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

#[cfg(not(target_os = "linux"))]
pub fn allowed_cpus() -> Vec<usize> {
    Vec::new()
}

/// Pins the calling thread to `cpu`; whether it could.
#[cfg(target_os = "linux")]
pub fn pin_current_thread(cpu: usize) -> bool {
    if cpu >= libc::CPU_SETSIZE as usize {
        return false;
    }
    // SAFETY: as above; the set holds one valid CPU index.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

#[cfg(not(target_os = "linux"))]
pub fn pin_current_thread(_cpu: usize) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_pool_as_wide_as_the_allowed_cpus_is_pinned() {
        let cpus = allowed_cpus();
        assert_eq!(pool_cpus(1), None);
        if cfg!(target_os = "linux") {
            assert!(!cpus.is_empty());
            assert!(cpus.windows(2).all(|w| w[0] < w[1]));
        }
        if cpus.len() >= 2 && std::env::var("JTM_RS_PIN_THREADS").is_err() {
            assert_eq!(pool_cpus(cpus.len()), Some(cpus.clone()));
            assert_eq!(pool_cpus(cpus.len() + 1), None);
        }
    }

    #[test]
    fn a_pinned_thread_runs_only_on_its_cpu() {
        let cpus = allowed_cpus();
        let Some(&last) = cpus.last() else { return };
        let seen = std::thread::spawn(move || (pin_current_thread(last), allowed_cpus()))
            .join()
            .unwrap();
        assert_eq!(seen, (true, vec![last]));
        // The spawning thread keeps its own mask.
        assert_eq!(allowed_cpus(), cpus);
    }
}
