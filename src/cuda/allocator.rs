//! `CachingAllocator`: device memory reused through per-size free lists, so that a steady-state
//! loop (a denoising step, a training step) makes no driver allocation after its first pass.
//!
//! Sizes are rounded up to a class (512 B granules below 1 MiB, 2 MiB granules above), and a
//! freed block goes back to its class's list instead of to the driver. All work runs on one
//! stream, so a block freed by the host after queuing kernels that use it can be handed to the
//! next allocation at once: stream order keeps the old and new uses apart, as in PyTorch's
//! caching allocator. When the driver reports out of memory the cache is released and the
//! allocation retried once; a second failure is an error naming the size and what is held.

use super::modules::driver_error;
use crate::error::{Error, Result};
use cudarc::driver::{CudaSlice, CudaStream};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

const SMALL_GRANULE: usize = 512;
const LARGE_GRANULE: usize = 2 << 20;
const LARGE_FROM: usize = 1 << 20;

/// Counters of what the allocator did (for tests, benches and `--verbose` reports).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AllocStats {
    /// Calls that reached the driver (cuMemAlloc / cuMemAllocAsync).
    pub driver_allocs: u64,
    /// Requests served from the cache.
    pub reuses: u64,
    /// Bytes in blocks currently handed out.
    pub bytes_in_use: usize,
    /// Bytes in blocks held in the free lists.
    pub bytes_cached: usize,
    /// Highest bytes_in_use seen.
    pub peak_in_use: usize,
}

struct Pool {
    /// Free blocks by class size.
    free: BTreeMap<usize, Vec<CudaSlice<u8>>>,
    stats: AllocStats,
}

/// A caching allocator for one stream.
#[derive(Clone)]
pub struct CachingAllocator {
    stream: Arc<CudaStream>,
    pool: Arc<Mutex<Pool>>,
}

/// A device block of at least `len` bytes; returns to its allocator's cache when dropped.
pub struct Block {
    slice: Option<CudaSlice<u8>>,
    len: usize,
    pool: Arc<Mutex<Pool>>,
}

/// The class a request of `bytes` is served from.
pub fn class_size(bytes: usize) -> usize {
    let granule = if bytes >= LARGE_FROM {
        LARGE_GRANULE
    } else {
        SMALL_GRANULE
    };
    bytes.max(1).div_ceil(granule) * granule
}

impl CachingAllocator {
    pub fn new(stream: Arc<CudaStream>) -> CachingAllocator {
        CachingAllocator {
            stream,
            pool: Arc::new(Mutex::new(Pool {
                free: BTreeMap::new(),
                stats: AllocStats::default(),
            })),
        }
    }

    /// A block of at least `bytes` bytes (contents undefined).
    pub fn alloc(&self, bytes: usize) -> Result<Block> {
        let class = class_size(bytes);
        {
            let mut pool = self.lock()?;
            if let Some(slice) = pool.free.get_mut(&class).and_then(|v| v.pop()) {
                pool.stats.reuses += 1;
                pool.stats.bytes_cached -= class;
                pool.take(class);
                return Ok(self.block(slice, bytes));
            }
        }
        let slice = match self.driver_alloc(class) {
            Ok(s) => s,
            Err(_) => {
                // Out of memory (or fragmentation): give the cache back and try once more.
                self.release_cached()?;
                self.driver_alloc(class).map_err(|e| {
                    let stats = self.stats();
                    Error::msg(format!(
                        "out of GPU memory: allocating {bytes} bytes failed ({e}); medsyn holds {} MiB \
                         in use (peak {} MiB); lower the batch size or the resolution",
                        stats.bytes_in_use >> 20,
                        stats.peak_in_use >> 20
                    ))
                })?
            }
        };
        let mut pool = self.lock()?;
        pool.stats.driver_allocs += 1;
        pool.take(class);
        drop(pool);
        Ok(self.block(slice, bytes))
    }

    /// Frees every cached block back to the driver (blocks in use stay).
    pub fn release_cached(&self) -> Result<()> {
        let freed: Vec<CudaSlice<u8>> = {
            let mut pool = self.lock()?;
            pool.stats.bytes_cached = 0;
            std::mem::take(&mut pool.free)
                .into_values()
                .flatten()
                .collect()
        };
        drop(freed);
        Ok(())
    }

    pub fn stats(&self) -> AllocStats {
        self.pool.lock().map(|p| p.stats).unwrap_or_default()
    }

    fn driver_alloc(&self, class: usize) -> Result<CudaSlice<u8>> {
        // SAFETY: a Block's contents are undefined until written, as its docs say.
        unsafe { self.stream.alloc::<u8>(class) }
            .map_err(|e| driver_error(e, &format!("allocating {class} bytes")))
    }

    fn block(&self, slice: CudaSlice<u8>, len: usize) -> Block {
        Block {
            slice: Some(slice),
            len,
            pool: self.pool.clone(),
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, Pool>> {
        self.pool
            .lock()
            .map_err(|_| Error::msg("GPU allocator poisoned by an earlier panic"))
    }
}

impl Pool {
    fn take(&mut self, class: usize) {
        self.stats.bytes_in_use += class;
        self.stats.peak_in_use = self.stats.peak_in_use.max(self.stats.bytes_in_use);
    }
}

impl Block {
    /// The requested length in bytes (the block itself may be larger).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The device memory (of the class size).
    pub fn slice(&self) -> &CudaSlice<u8> {
        self.slice.as_ref().expect("a live block holds its slice")
    }

    pub fn slice_mut(&mut self) -> &mut CudaSlice<u8> {
        self.slice.as_mut().expect("a live block holds its slice")
    }
}

impl Drop for Block {
    fn drop(&mut self) {
        let Some(slice) = self.slice.take() else {
            return;
        };
        let class = slice.len();
        if let Ok(mut pool) = self.pool.lock() {
            pool.stats.bytes_in_use -= class;
            pool.stats.bytes_cached += class;
            pool.free.entry(class).or_default().push(slice);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::class_size;

    #[test]
    fn classes_round_up_to_granules() {
        assert_eq!(class_size(0), 512);
        assert_eq!(class_size(1), 512);
        assert_eq!(class_size(512), 512);
        assert_eq!(class_size(513), 1024);
        assert_eq!(class_size((1 << 20) - 1), 1 << 20);
        assert_eq!(class_size(1 << 20), 2 << 20);
        assert_eq!(class_size((2 << 20) + 1), 4 << 20);
    }
}
