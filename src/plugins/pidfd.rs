//! Process file descriptors (`pidfd_open(2)`): a descriptor that pins one process (its pid
//! cannot be reused while the descriptor is open) and becomes readable when it ends, so a
//! waiter sleeps in `poll`/the reactor instead of looping on `/proc`.

use std::os::fd::{FromRawFd, OwnedFd};

/// A pidfd for `pid`.
///
/// # Errors
/// The kernel's: `ESRCH` when no such process runs, `ENOSYS` before Linux 5.3.
pub fn open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; the returned fd is owned by us.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    let fd = i32::try_from(fd).map_err(|_| std::io::Error::from_raw_os_error(libc::EBADF))?;
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
