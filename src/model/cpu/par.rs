//! Parallel loops: rayon natively; in wasm, one thread, or the page's own
//! pool of Web Workers in the build with shared memory (`pool` below).

/// Runs `f(i)` for every i in 0..n, in parallel where threads exist.
pub fn for_each_task<F: Fn(usize) + Sync + Send>(n: usize, f: F) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        (0..n).into_par_iter().for_each(f);
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
    {
        pool::for_each_task(n, &f);
    }
    #[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
    {
        (0..n).for_each(f);
    }
}

/// Runs `f` on a worker of the thread pool, so the parallel loops inside it
/// split work without waking a blocked caller each time (natively; in wasm
/// it simply calls `f`).
pub fn in_pool<R: Send, F: FnOnce() -> R + Send>(f: F) -> R {
    #[cfg(not(target_arch = "wasm32"))]
    {
        rayon::join(f, || ()).0
    }
    #[cfg(target_arch = "wasm32")]
    {
        f()
    }
}

/// Threads the CPU engine runs on (in wasm: 1, plus the workers that have
/// joined the pool in the shared-memory build).
pub fn num_threads() -> usize {
    #[cfg(not(target_arch = "wasm32"))]
    {
        rayon::current_num_threads()
    }
    #[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
    {
        1 + pool::workers()
    }
    #[cfg(all(target_arch = "wasm32", not(target_feature = "atomics")))]
    {
        1
    }
}

#[cfg(all(target_arch = "wasm32", target_feature = "atomics"))]
pub use pool::{install_panic_hook, stop_a_worker, worker_loop, worker_stopped, MAX_WORKERS};

/// The shared-memory wasm build's pool. The page's thread cannot block (a
/// browser traps `memory.atomic.wait` there), so it never waits on a lock:
/// it publishes a loop, takes tasks itself beside the workers, and spins
/// until the last task is done. Workers (Web Workers on the same memory,
/// started by the page, `app::web`) park between loops. One loop at a
/// time: a loop started inside a task, or while another runs, runs on its
/// caller's thread alone. Natively it is compiled for its test only (with
/// threads of std as the workers).
#[cfg(any(test, all(target_arch = "wasm32", target_feature = "atomics")))]
mod pool {
    use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicUsize, Ordering::SeqCst};
    use std::sync::OnceLock;
    use std::thread::Thread;

    /// The most workers the pool takes.
    pub const MAX_WORKERS: usize = 15;

    /// One published loop: its body, its size, the next task to take and
    /// how many are done. It lives on the publisher's stack.
    struct Job<'a> {
        f: &'a (dyn Fn(usize) + Sync),
        n: usize,
        next: AtomicUsize,
        done: AtomicUsize,
    }

    /// The loop workers look for (null: none).
    static JOB: AtomicPtr<Job<'static>> = AtomicPtr::new(std::ptr::null_mut());
    /// Bumped for each new loop; a worker runs a loop once.
    static GENERATION: AtomicU32 = AtomicU32::new(0);
    /// Workers between reading `JOB` and being done with what it pointed to.
    static USERS: AtomicUsize = AtomicUsize::new(0);
    /// A loop is running.
    static BUSY: AtomicBool = AtomicBool::new(false);
    static JOINED: AtomicUsize = AtomicUsize::new(0);
    /// Workers that died in a task (a panic, `install_panic_hook`; or a
    /// trap such as memory running out, `worker_stopped`): the task will
    /// never be done, and the worker is still counted in `USERS`.
    static DEAD: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static IS_WORKER: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        /// This worker is counted in `DEAD`.
        static COUNTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    static WORKERS: [OnceLock<Thread>; MAX_WORKERS] = [const { OnceLock::new() }; MAX_WORKERS];

    /// Adds to the panic hook (the process's, so every thread's) a count
    /// of the workers that panicked (in wasm: aborted), so the loop they
    /// were in stops with a panic on the publisher's thread, which the page
    /// reports, instead of spinning for ever for their tasks. Call once,
    /// before the workers start.
    pub fn install_panic_hook() {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            count_dead();
            previous(info);
        }));
    }

    /// Counts this thread in `DEAD`, once, if it is a worker.
    fn count_dead() {
        if IS_WORKER.with(|w| w.get()) && !COUNTED.with(|c| c.replace(true)) {
            DEAD.fetch_add(1, SeqCst);
        }
    }

    /// Called on a worker after its `worker_loop` stopped without a panic
    /// (in wasm a trap: memory ran out, or an abort after a panic, then
    /// already counted), so the loop it was in stops on the publisher's
    /// thread instead of spinning for ever for its task.
    pub fn worker_stopped() {
        count_dead();
    }

    /// Spins until `done` holds (true), or a worker has died (false).
    fn spin_until(done: impl Fn() -> bool) -> bool {
        while !done() {
            if DEAD.load(SeqCst) > 0 {
                return false;
            }
            std::hint::spin_loop();
        }
        true
    }

    /// A worker died in `job`: let no more tasks be taken, wait for the
    /// live workers to leave it (the dead stay counted in `USERS`), retire
    /// the dead from `USERS` and `DEAD` (the pool goes on with the others),
    /// and panic.
    fn abandon(job: &Job) -> ! {
        job.next.store(usize::MAX / 2, SeqCst);
        JOB.store(std::ptr::null_mut(), SeqCst);
        while USERS.load(SeqCst) > DEAD.load(SeqCst) {
            std::hint::spin_loop();
        }
        let dead = DEAD.load(SeqCst);
        USERS.fetch_sub(dead, SeqCst);
        DEAD.fetch_sub(dead, SeqCst);
        BUSY.store(false, SeqCst);
        panic!("a worker of the CPU engine stopped (it panicked, or memory ran out): its loop cannot finish");
    }

    /// The next task a worker takes aborts that worker (a trap in wasm,
    /// as when memory runs out), for the page's test of what follows.
    #[cfg(target_arch = "wasm32")]
    static STOP_ONE: AtomicBool = AtomicBool::new(false);

    /// Makes the next task a worker takes abort it (`STOP_ONE`).
    #[cfg(target_arch = "wasm32")]
    pub fn stop_a_worker() {
        STOP_ONE.store(true, SeqCst);
    }

    pub fn workers() -> usize {
        JOINED.load(SeqCst).min(MAX_WORKERS)
    }

    /// Takes and runs tasks until none is left.
    fn work(job: &Job) {
        loop {
            let i = job.next.fetch_add(1, SeqCst);
            if i >= job.n {
                return;
            }
            #[cfg(target_arch = "wasm32")]
            if STOP_ONE.load(SeqCst) && IS_WORKER.with(|w| w.get()) && STOP_ONE.swap(false, SeqCst) {
                std::process::abort();
            }
            (job.f)(i);
            job.done.fetch_add(1, SeqCst);
        }
    }

    pub fn for_each_task(n: usize, f: &(dyn Fn(usize) + Sync)) {
        if n <= 1 || workers() == 0 || BUSY.swap(true, SeqCst) {
            (0..n).for_each(f);
            return;
        }
        let job = Job {
            f,
            n,
            next: AtomicUsize::new(0),
            done: AtomicUsize::new(0),
        };
        // Safety: the pointer is withdrawn, and every worker done with it,
        // before `job` goes out of scope (below).
        let ptr = &job as *const Job as *mut Job<'static>;
        JOB.store(ptr, SeqCst);
        GENERATION.fetch_add(1, SeqCst);
        for slot in &WORKERS {
            if let Some(t) = slot.get() {
                t.unpark();
            }
        }
        work(&job);
        if !spin_until(|| job.done.load(SeqCst) >= n) {
            abandon(&job);
        }
        // A worker counts itself in `USERS` before it reads `JOB`, so once
        // `JOB` is null and `USERS` is 0 none holds the pointer.
        JOB.store(std::ptr::null_mut(), SeqCst);
        if !spin_until(|| USERS.load(SeqCst) == 0) {
            abandon(&job);
        }
        BUSY.store(false, SeqCst);
    }

    /// A worker's life: join the pool, then run each published loop's
    /// tasks, parked in between. Never returns; called once per Web Worker.
    pub fn worker_loop() -> ! {
        let index = JOINED.fetch_add(1, SeqCst);
        if index >= MAX_WORKERS {
            // Not needed: stay parked.
            loop {
                std::thread::park();
            }
        }
        let _ = WORKERS[index].set(std::thread::current());
        IS_WORKER.with(|w| w.set(true));
        let mut seen = GENERATION.load(SeqCst);
        loop {
            let generation = GENERATION.load(SeqCst);
            if generation == seen {
                std::thread::park();
                continue;
            }
            seen = generation;
            USERS.fetch_add(1, SeqCst);
            let ptr = JOB.load(SeqCst);
            if !ptr.is_null() {
                // Safety: non-null while its publisher waits for `USERS`.
                work(unsafe { &*ptr });
            }
            USERS.fetch_sub(1, SeqCst);
        }
    }
}

/// A raw pointer that parallel tasks share to write disjoint parts of one
/// buffer (strided head columns that slices cannot split).
#[derive(Clone, Copy)]
pub struct SharedMut<T>(pub *mut T);
unsafe impl<T: Send> Send for SharedMut<T> {}
unsafe impl<T: Send> Sync for SharedMut<T> {}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod tests {
    use super::pool;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};

    /// The wasm pool's synchronization, with three std threads as its
    /// workers: every task of every loop runs exactly once, loops of one
    /// to many tasks follow each other without a gap, and a loop started
    /// inside a task of a loop (of 14 tasks) runs whole on that task's
    /// thread. A failed assertion on a worker would leave the loop waiting
    /// for its task, so the test's harness timeout is what reports it.
    #[test]
    fn the_pool_runs_each_task_once() {
        for _ in 0..3 {
            std::thread::spawn(|| pool::worker_loop());
        }
        while pool::workers() < 3 {
            std::thread::yield_now();
        }
        let main = std::thread::current().id();
        let by_workers = AtomicUsize::new(0);
        for round in 0..2000 {
            let nest = round % 100 == 50;
            let n = if nest { 14 } else { 1 + round % 37 };
            let counts: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            let nested = AtomicUsize::new(0);
            pool::for_each_task(n, &|i| {
                counts[i].fetch_add(1, SeqCst);
                // A little work, so the workers wake in time to share it.
                std::hint::black_box((0..2000u64).fold(0u64, |x, k| x.wrapping_mul(31).wrapping_add(k)));
                if std::thread::current().id() != main {
                    by_workers.fetch_add(1, SeqCst);
                }
                if i == 0 && nest {
                    let here = std::thread::current().id();
                    pool::for_each_task(5, &|_| {
                        assert_eq!(std::thread::current().id(), here, "a nested loop left its thread");
                        nested.fetch_add(1, SeqCst);
                    });
                }
            });
            for (i, c) in counts.iter().enumerate() {
                assert_eq!(
                    c.load(SeqCst),
                    1,
                    "round {round}: task {i} of {n} ran {} times",
                    c.load(SeqCst)
                );
            }
            if nest {
                assert_eq!(nested.load(SeqCst), 5, "round {round}: the nested loop");
            }
        }
        let shared = by_workers.load(SeqCst);
        assert!(shared > 0, "the workers took no task");
        eprintln!("the workers took {shared} of the tasks");

        // A worker that stops inside a task without a panic (in wasm: a
        // trap, memory running out, after which the worker's script calls
        // `worker_stopped`): the loop panics on this thread instead of
        // waiting for it for ever, and the pool goes on with the others.
        let died = std::sync::atomic::AtomicBool::new(false);
        let stopped = std::panic::catch_unwind(|| {
            for _ in 0..1000 {
                pool::for_each_task(14, &|_| {
                    std::hint::black_box((0..20000u64).fold(0u64, |x, k| x.wrapping_mul(31).wrapping_add(k)));
                    if std::thread::current().id() != main && !died.swap(true, SeqCst) {
                        pool::worker_stopped();
                        loop {
                            std::thread::park();
                        }
                    }
                });
            }
        });
        let message = stopped.expect_err("no task ran on a worker in 1000 loops");
        let text = message.downcast_ref::<&str>().copied().unwrap_or_default();
        assert!(text.contains("memory ran out"), "the loop stopped with {text:?}");
        let counts: Vec<AtomicUsize> = (0..50).map(|_| AtomicUsize::new(0)).collect();
        pool::for_each_task(50, &|i| {
            counts[i].fetch_add(1, SeqCst);
        });
        assert!(
            counts.iter().all(|c| c.load(SeqCst) == 1),
            "a loop after a worker stopped"
        );

        // A task that panics on a worker: the same.
        pool::install_panic_hook();
        let stopped = std::panic::catch_unwind(|| {
            for _ in 0..1000 {
                pool::for_each_task(14, &|_| {
                    std::hint::black_box((0..20000u64).fold(0u64, |x, k| x.wrapping_mul(31).wrapping_add(k)));
                    if std::thread::current().id() != main {
                        panic!("a task failed on a worker");
                    }
                });
            }
        });
        let message = stopped.expect_err("no task ran on a worker in 1000 loops");
        let text = message.downcast_ref::<&str>().copied().unwrap_or_default();
        assert!(text.contains("cannot finish"), "the loop stopped with {text:?}");
    }
}
