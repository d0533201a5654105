//! The one tolerance rule every numerical test uses:
//! `|x - ref| <= atol + rtol * |ref|` element by element. A failure reports
//! the worst element (by how far past its tolerance it is), its index and
//! both values, so a mismatch points at a place, not just a yes/no.

#[derive(Debug, Clone, Copy)]
pub struct Tolerance {
    pub atol: f64,
    pub rtol: f64,
}

impl Tolerance {
    pub const fn new(atol: f64, rtol: f64) -> Self {
        Tolerance { atol, rtol }
    }
}

/// Compares `got` against `reference`; Err names the worst index.
pub fn check_close<A: Copy + Into<f64>, B: Copy + Into<f64>>(
    what: &str,
    got: &[A],
    reference: &[B],
    tol: Tolerance,
) -> Result<(), String> {
    if got.len() != reference.len() {
        return Err(format!("{what}: length {} vs reference {}", got.len(), reference.len()));
    }
    let mut worst: Option<(usize, f64, f64, f64)> = None; // (index, got, ref, excess ratio)
    let mut failures = 0usize;
    for (i, (&g, &r)) in got.iter().zip(reference).enumerate() {
        let (g, r): (f64, f64) = (g.into(), r.into());
        let allowed = tol.atol + tol.rtol * r.abs();
        let err = (g - r).abs();
        // NaN anywhere fails: `err <= allowed` is false for NaN.
        let ok = err <= allowed;
        if !ok {
            failures += 1;
        }
        let ratio = if err.is_nan() {
            f64::INFINITY
        } else {
            err / allowed.max(f64::MIN_POSITIVE)
        };
        if worst.is_none_or(|w| ratio > w.3) {
            worst = Some((i, g, r, ratio));
        }
    }
    match worst {
        Some((i, g, r, ratio)) if failures > 0 => Err(format!(
            "{what}: {failures} of {} elements outside |x - ref| <= {} + {} * |ref|; worst at index {i}: got {g:e}, ref {r:e} ({ratio:.2}x the tolerance)",
            got.len(),
            tol.atol,
            tol.rtol
        )),
        _ => Ok(()),
    }
}

/// `check_close` that panics with its message (for tests).
#[track_caller]
pub fn assert_close<A: Copy + Into<f64>, B: Copy + Into<f64>>(what: &str, got: &[A], reference: &[B], tol: Tolerance) {
    if let Err(e) = check_close(what, got, reference, tol) {
        panic!("{e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_the_worst_index_and_fails_on_nan() {
        let tol = Tolerance::new(1e-6, 1e-3);
        assert!(check_close("a", &[1.0f64, 2.0], &[1.0005f64, 2.0], tol).is_ok());
        let e = check_close("a", &[1.0f64, 2.5, 3.1], &[1.0f64, 2.0, 3.0], tol).unwrap_err();
        assert!(e.contains("index 1") && e.contains("2 of 3"), "{e}");
        let e = check_close("n", &[f64::NAN], &[0.0f64], tol).unwrap_err();
        assert!(e.contains("index 0"), "{e}");
        assert!(check_close("len", &[1.0f64], &[1.0f64, 2.0], tol).is_err());
    }
}
