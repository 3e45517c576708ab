//! The start-up comparison's Rust hello world: built with the helper's release profile, linked as it
//! is (dynamically, with std's runtime set-up before `main`), installed setuid root as it is. It
//! writes one byte to the fd named by `--fd=N` and exits: what any Rust program of this shape pays
//! from spawn to its first answer, against which the helper's own start-up steps are measured.

fn main() {
    let fd = std::env::args().nth(1).and_then(|a| {
        a.strip_prefix("--fd=")
            .and_then(|n| n.parse::<libc::c_int>().ok())
    });
    let Some(fd) = fd else { std::process::exit(2) };
    // SAFETY: a write of one byte from a live static buffer; `fd` is the caller's to name.
    let n = unsafe { libc::write(fd, b"h".as_ptr().cast(), 1) };
    std::process::exit(i32::from(n != 1));
}
