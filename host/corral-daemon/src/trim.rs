//! Giving back what start-up touched and idling does not use (BENCHMARKS.md, "Idle
//! cost").
//!
//! Most of an idle daemon's resident memory is not data but its own program: the pages
//! of the `corral` binary that start-up ran or read (argument parsing, sidecar TOML,
//! the linkers, loading compiled code from the cache, the tier-up) and, with each, its
//! neighbours, which the kernel maps in 64 KiB at a time from the page cache, where the
//! compile worker (the same binary) has put Cranelift's and Winch's code. Those pages are
//! clean copies of the file: [`release_startup_pages`] unmaps them from the daemon
//! (`madvise(MADV_DONTNEED)` on the read-only mappings of the binary and its shared
//! libraries), and what idling runs
//! faults back in from the page cache; nothing is read from disk and nothing is lost.
//! It also hands the allocator's free pages back to the kernel (`malloc_trim`).
//!
//! And [`limit_arenas`]: glibc gives each thread that allocates an arena of its own, up
//! to eight per core, and an idle daemon has some thirty threads.

#![allow(unsafe_code)]

/// Caps glibc's malloc arenas at two: the daemon's threads share them (each keeps its
/// own cache of small blocks, so the hot paths do not contend). Call before any thread
/// starts; does nothing but on glibc.
pub(crate) fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes the allocator's tuning; M_ARENA_MAX takes any count.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// What [`release_startup_pages`] gave back.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Released {
    /// KiB of the binary's pages unmapped.
    pub program_kib: u64,
    /// KiB resident in total before, and after.
    pub rss_before_kib: u64,
    pub rss_after_kib: u64,
}

/// Unmaps the clean read-only pages of the `corral` binary and its shared libraries from
/// this process and returns the allocator's free memory to the kernel. Safe to call at
/// any time, from any thread: only mappings of those files that are not writable and
/// hold no private (written) page are touched, and their pages come back from the file
/// on their next use.
pub(crate) fn release_startup_pages() -> std::io::Result<Released> {
    let exe = std::fs::canonicalize("/proc/self/exe")?;
    let smaps = std::fs::read_to_string("/proc/self/smaps")?;
    let mut released = Released {
        rss_before_kib: rss_kib(),
        ..Released::default()
    };
    for mapping in mappings(&smaps) {
        // The binary, and the shared libraries (libc, libm, libgcc_s, the loader).
        let program = mapping
            .path
            .is_some_and(|p| std::path::Path::new(p) == exe || p.contains(".so"));
        if !program || mapping.perms.contains('w') || mapping.anonymous_kib != 0 || mapping.rss_kib == 0 {
            continue;
        }
        #[cfg(target_os = "linux")]
        {
            // SAFETY: the range is one whole mapping of the binary or a library, read-only
            // and with no private pages: MADV_DONTNEED drops its page-table entries, and
            // every later access refaults the same bytes from the same file (the running
            // executable cannot be written, ETXTBSY; a library replaced on disk is a new
            // file, and the mapping keeps the old one).
            let done = unsafe {
                libc::madvise(
                    mapping.start as *mut libc::c_void,
                    mapping.end - mapping.start,
                    libc::MADV_DONTNEED,
                )
            };
            if done == 0 {
                released.program_kib += mapping.rss_kib;
            }
        }
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory of the allocator's to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
    released.rss_after_kib = rss_kib();
    Ok(released)
}

/// This process's resident KiB, from `/proc/self/statm`.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()))
        .map_or(0, |pages| pages * 4)
}

/// One mapping of `/proc/PID/smaps`.
#[derive(Debug, PartialEq, Eq)]
struct Mapping<'a> {
    start: usize,
    end: usize,
    perms: &'a str,
    path: Option<&'a str>,
    rss_kib: u64,
    anonymous_kib: u64,
}

/// The mappings `smaps` lists, with their resident and anonymous KiB.
fn mappings(smaps: &str) -> Vec<Mapping<'_>> {
    let mut out: Vec<Mapping<'_>> = Vec::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else { continue };
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (usize::from_str_radix(start, 16), usize::from_str_radix(end, 16))
        {
            // range, perms, offset, device, inode, path
            let perms = words.next().unwrap_or("");
            let path = words.nth(3);
            out.push(Mapping {
                start,
                end,
                perms,
                path,
                rss_kib: 0,
                // Unknown until read: treated as written.
                anonymous_kib: u64::MAX,
            });
            continue;
        }
        let Some(mapping) = out.last_mut() else { continue };
        let kib = || words.clone().next().and_then(|v| v.parse::<u64>().ok());
        match first {
            "Rss:" => mapping.rss_kib = kib().unwrap_or(0),
            "Anonymous:" => mapping.anonymous_kib = kib().unwrap_or(u64::MAX),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SMAPS: &str = "\
55d0c0000000-55d0c078f000 r--p 00000000 fd:01 1234 /usr/bin/corral
Size:               7740 kB
Rss:                3900 kB
Anonymous:             0 kB
55d0c078f000-55d0c1e72000 r-xp 0078e000 fd:01 1234 /usr/bin/corral
Rss:               13900 kB
Anonymous:             0 kB
55d0c1e73000-55d0c1f50000 r--p 01e71000 fd:01 1234 /usr/bin/corral
Rss:                 880 kB
Anonymous:           880 kB
7f0000000000-7f0000021000 rw-p 00000000 00:00 0 
Rss:                 132 kB
Anonymous:           132 kB
";

    #[test]
    fn mappings_are_read_with_their_path_resident_and_written_kib() {
        let maps = mappings(SMAPS);
        assert_eq!(maps.len(), 4);
        assert_eq!(maps[1].start, 0x55d0c078f000);
        assert_eq!(maps[1].perms, "r-xp");
        assert_eq!(maps[1].path, Some("/usr/bin/corral"));
        assert_eq!((maps[1].rss_kib, maps[1].anonymous_kib), (13900, 0));
        // The relocated read-only data has private pages: never to be dropped.
        assert_eq!(maps[2].anonymous_kib, 880);
        assert_eq!(maps[3].path, None);
    }

    #[test]
    fn releasing_keeps_the_process_running_and_its_data_intact() {
        let data: Vec<u64> = (0..100_000).collect();
        let released = release_startup_pages().unwrap();
        // Code runs and data reads back after the binary's pages were dropped.
        assert_eq!(data.iter().sum::<u64>(), 99_999 * 100_000 / 2);
        assert!(released.rss_before_kib > 0);
        assert_eq!(format!("{}", 6 * 7), "42");
    }
}
