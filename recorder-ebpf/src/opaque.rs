//! A value LLVM cannot reason about, at no cost in instructions.
//!
//! The verifier needs some checks that LLVM proves redundant and drops (a bound implied by an
//! earlier comparison, a mask implied by the reservation), and it walks each way a value may
//! have come separately. `core::hint::black_box` hides a value from LLVM by a store to the stack
//! and a load back: three instructions each time, on the path every event takes. A move of the
//! register onto itself in `asm!` hides it as well in one instruction. (An empty template would
//! emit none, but its line information then shares an instruction offset with the next line's,
//! and the kernel refuses the program.)

/// `v`, opaque to LLVM: what follows cannot use what LLVM knew of it.
#[inline(always)]
pub(crate) fn opaque(mut v: u64) -> u64 {
    // SAFETY: `r = r`: no memory is touched and the value is unchanged.
    unsafe { core::arch::asm!("{0} = {0}", inout(reg) v, options(pure, nomem, nostack)) };
    v
}
