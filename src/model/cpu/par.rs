//! Parallel loops: rayon natively, a plain loop in wasm (one thread there).

/// Runs `f(i)` for every i in 0..n, in parallel where threads exist.
pub fn for_each_task<F: Fn(usize) + Sync + Send>(n: usize, f: F) {
    #[cfg(not(target_arch = "wasm32"))]
    {
        use rayon::prelude::*;
        (0..n).into_par_iter().for_each(f);
    }
    #[cfg(target_arch = "wasm32")]
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

/// Threads the CPU engine runs on (1 in wasm).
pub fn num_threads() -> usize {
    #[cfg(not(target_arch = "wasm32"))]
    {
        rayon::current_num_threads()
    }
    #[cfg(target_arch = "wasm32")]
    {
        1
    }
}

/// A raw pointer that parallel tasks share to write disjoint parts of one
/// buffer (strided head columns that slices cannot split).
#[derive(Clone, Copy)]
pub struct SharedMut<T>(pub *mut T);
unsafe impl<T: Send> Send for SharedMut<T> {}
unsafe impl<T: Send> Sync for SharedMut<T> {}
