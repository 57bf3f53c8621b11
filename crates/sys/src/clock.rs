//! The boot-time clock: counts time since boot including suspend, and cannot be set.

use std::io;
use std::time::Duration;

use crate::cvt;

/// Reads `CLOCK_BOOTTIME`.
pub fn boottime() -> io::Result<Duration> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a live timespec the kernel (or vDSO) fills in.
    cvt(unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) })?;
    Ok(Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32))
}

/// The kernel's random id of this boot (`/proc/sys/kernel/random/boot_id`): a boot-time
/// reading is only comparable with one taken under the same id.
pub fn read_boot_id() -> io::Result<String> {
    let s = std::fs::read_to_string("/proc/sys/kernel/random/boot_id")?;
    let s = s.trim();
    if s.len() != 36 || !s.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "unexpected boot_id format",
        ));
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boottime_moves_forward() {
        let a = boottime().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let b = boottime().unwrap();
        assert!(b >= a + Duration::from_millis(15), "{a:?} then {b:?}");
        assert_eq!(read_boot_id().unwrap(), read_boot_id().unwrap());
    }
}
