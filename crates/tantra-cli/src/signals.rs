//! Interrupts: Ctrl-C, `kill` and a closed terminal remove the command's temporary files.
//!
//! SIGINT, SIGTERM and SIGHUP are blocked in every thread (the mask is set before any thread
//! starts, so all inherit it) and received by one thread in `sigwait`. That thread can do what a
//! signal handler may not, take locks and free memory: it removes the temporary files this
//! process still owns ([`tantra_formats::temp::remove_live`]) and then ends the process with
//! the signal's default action, so the exit status says which signal it was. Files already
//! renamed into place are complete and stay; the registry is only ever replaced by a rename, so
//! an interrupt leaves every version as it was or as requested.

/// Installs the interrupt thread. Call once, first thing in `main`.
pub fn install() {
    #[cfg(unix)]
    // SAFETY: sigset operations on a local, zero-initialised set; pthread_sigmask on the
    // calling (only) thread; the thread only calls sigwait and async-safe libc functions plus
    // tantra's own cleanup.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, s);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return;
        }
        let spawned = std::thread::Builder::new()
            .name("tantra-signals".into())
            .spawn(move || {
                let mut sig: libc::c_int = 0;
                if libc::sigwait(&set, &mut sig) != 0 {
                    return;
                }
                tantra_formats::temp::remove_live();
                // Default action, unblocked, re-raised: the process ends by this signal.
                libc::signal(sig, libc::SIG_DFL);
                let mut one: libc::sigset_t = std::mem::zeroed();
                libc::sigemptyset(&mut one);
                libc::sigaddset(&mut one, sig);
                libc::pthread_sigmask(libc::SIG_UNBLOCK, &one, std::ptr::null_mut());
                libc::raise(sig);
                std::process::exit(128 + sig);
            });
        if spawned.is_err() {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
    }
}
