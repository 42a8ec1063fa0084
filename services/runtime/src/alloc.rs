//! Process-wide malloc settings, applied by each binary before its runtime starts threads.
//!
//! **Why.** The binaries run on glibc (Debian, and the Docker image is Debian slim). Two of
//! glibc malloc's defaults cost the consumer about a third of its memory:
//!
//! * **Arenas.** Every thread that meets contention gets its own arena, up to 8 per core,
//!   and each arena keeps its own high-water mark. The consumer's batches are built on one
//!   tokio worker and written from another, and librdkafka has threads of its own.
//! * **The dynamic mmap threshold.** A block above the threshold (128 KiB at first) is
//!   mmapped and given back to the kernel when freed. But freeing one raises the threshold
//!   to its size (up to 32 MiB), so after the first micro-batch every batch-sized buffer
//!   (points, line protocol text, a few MB each) comes from the heap, where it fragments
//!   and is never returned.
//!
//! Measured with the release consumer on 1,000 symbols, a full topic and 10,000-message
//! batches: peak RSS 89 MB with the defaults, 66 MB with two arenas and a fixed 1 MiB mmap
//! threshold, at the same throughput (BENCHMARKS.md). A fixed threshold also turns off
//! the dynamic adjustment, so RSS follows what is live.
//!
//! **Overrides.** glibc's own environment variables win: when `MALLOC_ARENA_MAX` or
//! `MALLOC_MMAP_THRESHOLD_` is set, that setting is left alone. On other C libraries
//! (musl, macOS) nothing is changed.

/// Arenas allowed: two keeps contention between the runtime's threads and librdkafka's low.
pub const ARENA_MAX: i32 = 2;

/// Blocks of at least this many bytes are mmapped, and returned to the kernel when freed.
pub const MMAP_THRESHOLD: i32 = 1 << 20;

/// One malloc parameter: glibc's environment variable for it and the value we want.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// The environment variable glibc reads for it (which, when set, wins).
    pub env: &'static str,
    pub value: i32,
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    param: libc::c_int,
}

/// What [`tune`] did, for the startup log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tuned {
    /// Applied settings.
    pub applied: Vec<Setting>,
    /// Left alone because the environment set them.
    pub from_env: Vec<&'static str>,
    /// mallopt refused these (should not happen on glibc).
    pub refused: Vec<&'static str>,
}

impl Tuned {
    /// One line for the log, e.g. `MALLOC_ARENA_MAX=2 MALLOC_MMAP_THRESHOLD_=1048576`.
    pub fn describe(&self) -> String {
        let mut parts: Vec<String> = self
            .applied
            .iter()
            .map(|s| format!("{}={}", s.env, s.value))
            .collect();
        parts.extend(
            self.from_env
                .iter()
                .map(|e| format!("{e} from the environment")),
        );
        parts.extend(
            self.refused
                .iter()
                .map(|e| format!("{e} refused by mallopt")),
        );
        if parts.is_empty() {
            "unchanged (not glibc)".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

/// The settings this build would apply.
pub fn settings() -> Vec<Setting> {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        vec![
            Setting {
                env: "MALLOC_ARENA_MAX",
                value: ARENA_MAX,
                param: libc::M_ARENA_MAX,
            },
            Setting {
                env: "MALLOC_MMAP_THRESHOLD_",
                value: MMAP_THRESHOLD,
                param: libc::M_MMAP_THRESHOLD,
            },
        ]
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        Vec::new()
    }
}

/// Applies [`settings`], except those whose variable `env` reports as set. Call it first
/// thing in `main`, before any runtime or client starts its threads.
pub fn tune_with(env: impl Fn(&str) -> bool) -> Tuned {
    let mut tuned = Tuned::default();
    for s in settings() {
        if env(s.env) {
            tuned.from_env.push(s.env);
        } else if apply(&s) {
            tuned.applied.push(s);
        } else {
            tuned.refused.push(s.env);
        }
    }
    tuned
}

/// [`tune_with`] the process environment.
pub fn tune() -> Tuned {
    tune_with(|name| std::env::var_os(name).is_some())
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn apply(s: &Setting) -> bool {
    // SAFETY: mallopt only changes allocator parameters; glibc documents both as settable
    // at any time, and it returns 0 for a value it does not accept.
    unsafe { libc::mallopt(s.param, s.value) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn apply(_: &Setting) -> bool {
    false
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    #[test]
    fn applies_both_unless_the_environment_set_them() {
        let all = tune_with(|_| false);
        assert_eq!(all.applied, settings());
        assert!(all.refused.is_empty());
        assert_eq!(
            all.describe(),
            format!("MALLOC_ARENA_MAX={ARENA_MAX}, MALLOC_MMAP_THRESHOLD_={MMAP_THRESHOLD}")
        );

        let user = tune_with(|name| name == "MALLOC_ARENA_MAX");
        assert_eq!(user.from_env, vec!["MALLOC_ARENA_MAX"]);
        assert_eq!(user.applied.len(), 1);
        assert_eq!(user.applied[0].env, "MALLOC_MMAP_THRESHOLD_");
    }

    /// glibc marks a chunk served by mmap with the IS_MMAPPED bit (0x2) of the size word
    /// just before the pointer it returns.
    fn is_mmapped(block: &[u8]) -> bool {
        // SAFETY: every glibc chunk has its size word right before the user pointer.
        let size_word = unsafe { *(block.as_ptr() as *const usize).sub(1) };
        size_word & 0x2 == 0x2
    }

    #[test]
    fn freeing_a_big_block_does_not_raise_the_mmap_threshold() {
        tune_with(|_| false);
        // Untuned, freeing this 8 MiB mmapped block would raise the threshold to 8 MiB and
        // the 2 MiB block below would come from the heap, never to be returned.
        let big: Vec<u8> = Vec::with_capacity(8 << 20);
        assert!(is_mmapped(&big));
        drop(big);
        let batch: Vec<u8> = Vec::with_capacity(2 * MMAP_THRESHOLD as usize);
        assert!(is_mmapped(&batch), "a 2 MiB block should still be mmapped");
        let small: Vec<u8> = Vec::with_capacity(4096);
        assert!(
            !is_mmapped(&small),
            "a 4 KiB block should come from the heap"
        );
    }
}
