//! The memory packed weights live in. A decode step streams every weight once, and with 4 KiB
//! pages the TLB misses on that stream cost bandwidth (one core reading 700 MB on an AMD Zen 4
//! VM: 23.5 GB/s in 4 KiB pages, 30 GB/s in 2 MiB ones). Linux backs only whole 2 MiB-aligned
//! spans with huge pages, so a matrix of its own allocation loses its unaligned ends, and one
//! smaller than 4 MiB may get none: the many buffers of a model share one region instead,
//! aligned to 2 MiB and advised (`MADV_HUGEPAGE`) before any page is touched.

use std::alloc::Layout;
use std::ptr::NonNull;
use std::sync::Arc;

/// Alignment of each buffer inside a region: a cache line.
const ALIGN: usize = 64;
/// The huge page size regions are aligned to.
const HUGE: usize = 2 << 20;

/// Zeroed bytes of one packed matrix: a range of a region that only this value reads or
/// writes.
pub(crate) struct PackedBytes {
    region: Arc<Region>,
    start: usize,
    len: usize,
}

impl PackedBytes {
    /// One zeroed buffer of each length in `lens`, all in one region; `None` if the total
    /// overflows or the memory cannot be had.
    pub(crate) fn many(lens: &[usize]) -> Option<Vec<PackedBytes>> {
        let mut starts = Vec::with_capacity(lens.len());
        let mut total = 0usize;
        for &len in lens {
            starts.push(total);
            total = total.checked_add(len)?.checked_next_multiple_of(ALIGN)?;
        }
        let region = Arc::new(Region::zeroed(total)?);
        Some(
            starts
                .into_iter()
                .zip(lens)
                .map(|(start, &len)| PackedBytes {
                    region: Arc::clone(&region),
                    start,
                    len,
                })
                .collect(),
        )
    }

    /// One zeroed buffer in a region of its own.
    pub(crate) fn zeroed(len: usize) -> Option<PackedBytes> {
        Self::many(&[len])?.pop()
    }
}

impl std::ops::Deref for PackedBytes {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: `start..start + len` lies inside the region (`many` laid the ranges out
        // within its length), which lives as long as this `Arc`; no other value's range
        // overlaps it, and writes go only through `&mut self`.
        unsafe { std::slice::from_raw_parts(self.region.ptr.as_ptr().add(self.start), self.len) }
    }
}

impl std::ops::DerefMut for PackedBytes {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: as `deref`; `&mut self` makes this the only access to the range.
        unsafe {
            std::slice::from_raw_parts_mut(self.region.ptr.as_ptr().add(self.start), self.len)
        }
    }
}

impl std::fmt::Debug for PackedBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PackedBytes({} bytes)", self.len)
    }
}

/// Zeroed memory, mapped (2 MiB aligned, huge pages advised) or from the allocator.
struct Region {
    ptr: NonNull<u8>,
    len: usize,
    mapped: bool,
}

// SAFETY: a region is plain memory; the `PackedBytes` sharing it own disjoint ranges, read
// through `&` and written only through `&mut`, so threads never race on a byte.
unsafe impl Send for Region {}
// SAFETY: as for `Send`.
unsafe impl Sync for Region {}

impl Region {
    fn zeroed(len: usize) -> Option<Region> {
        if len == 0 {
            return Some(Region {
                ptr: NonNull::dangling(),
                len: 0,
                mapped: false,
            });
        }
        if let Some(r) = Self::huge_mapping(len) {
            return Some(r);
        }
        let layout = Layout::from_size_align(len, ALIGN).ok()?;
        // SAFETY: `layout` has a non-zero size.
        let ptr = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })?;
        Some(Region {
            ptr,
            len,
            mapped: false,
        })
    }

    /// An anonymous mapping of `len` bytes rounded up to 2 MiB, starting at a 2 MiB boundary,
    /// advised to be huge pages; `None` below 2 MiB (the allocator serves those), off Linux,
    /// with `HEARTH_NO_HUGEPAGES` set, or where the mapping fails.
    #[cfg(target_os = "linux")]
    fn huge_mapping(len: usize) -> Option<Region> {
        if len < HUGE || std::env::var_os("HEARTH_NO_HUGEPAGES").is_some() {
            return None;
        }
        let map_len = len.checked_next_multiple_of(HUGE)?;
        let with_slack = map_len.checked_add(HUGE)?;
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                with_slack,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return None;
        }
        let base = base as usize;
        let start = base.next_multiple_of(HUGE);
        let (head, tail) = (start - base, base + with_slack - (start + map_len));
        // SAFETY: the head and tail are the parts of the fresh mapping outside
        // `start..start + map_len`, which nothing references; MADV_HUGEPAGE only changes how
        // the kernel backs the range (a failure leaves 4 KiB pages, which is fine).
        unsafe {
            if head > 0 {
                libc::munmap(base as *mut libc::c_void, head);
            }
            if tail > 0 {
                libc::munmap((start + map_len) as *mut libc::c_void, tail);
            }
            libc::madvise(start as *mut libc::c_void, map_len, libc::MADV_HUGEPAGE);
        }
        Some(Region {
            ptr: NonNull::new(start as *mut u8)?,
            len: map_len,
            mapped: true,
        })
    }

    #[cfg(not(target_os = "linux"))]
    fn huge_mapping(_len: usize) -> Option<Region> {
        None
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        if self.len == 0 {
            return;
        }
        if self.mapped {
            #[cfg(target_os = "linux")]
            // SAFETY: `ptr..ptr + len` is the mapping `huge_mapping` kept, unmapped once here.
            unsafe {
                libc::munmap(self.ptr.as_ptr().cast(), self.len);
            }
            return;
        }
        if let Ok(layout) = Layout::from_size_align(self.len, ALIGN) {
            // SAFETY: allocated in `zeroed` with this same layout.
            unsafe { std::alloc::dealloc(self.ptr.as_ptr(), layout) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_of_a_region_are_zeroed_and_disjoint() {
        let lens = [3 << 20, 0, 100, 1 << 20, 65];
        let mut bufs = PackedBytes::many(&lens).unwrap();
        for (b, &len) in bufs.iter().zip(&lens) {
            assert_eq!(b.len(), len);
            assert!(b.iter().all(|&x| x == 0));
            assert_eq!(b.as_ptr() as usize % ALIGN, 0);
        }
        for (i, b) in bufs.iter_mut().enumerate() {
            b.fill(i as u8 + 1);
        }
        for (i, b) in bufs.iter().enumerate() {
            assert!(
                b.iter().all(|&x| x == i as u8 + 1),
                "buffer {i} overwritten"
            );
        }
        // Dropped in any order, the region lives until the last one goes.
        let last = bufs.pop().unwrap();
        drop(bufs);
        assert!(last.iter().all(|&x| x == 5));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn large_regions_start_at_a_huge_page() {
        if std::env::var_os("HEARTH_NO_HUGEPAGES").is_some() {
            return;
        }
        let b = PackedBytes::zeroed(5 << 20).unwrap();
        assert_eq!(b.as_ptr() as usize % HUGE, 0);
        assert!(b.region.mapped);
    }

    #[test]
    fn sizes_that_overflow_are_refused() {
        assert!(PackedBytes::many(&[usize::MAX, 1]).is_none());
        assert!(PackedBytes::many(&[usize::MAX - 10]).is_none());
        assert!(PackedBytes::zeroed(isize::MAX as usize + 1).is_none());
    }
}
