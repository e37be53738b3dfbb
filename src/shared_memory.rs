//! Host memory other processes can map, and the fixed-size handle that describes a tensor in it.
//!
//! A segment is an anonymous memory file (`memfd_create`): it has no name, so nothing is left in
//! `/dev/shm` when processes die, and no other process can open it; the only way in is its file
//! descriptor, which the user hands over (SCM_RIGHTS over a Unix socket, inheritance across
//! `fork`/`exec`, or Python's `multiprocessing` resource sharing). The kernel frees the memory
//! when the last descriptor is closed and the last mapping is gone, in whichever process.
//!
//! Every segment is sealed at its size (`F_SEAL_SHRINK | F_SEAL_GROW | F_SEAL_SEAL`) before it is
//! handed out. An importer checks those seals and takes the size from the descriptor itself
//! (`fstat`), never from the handle: a forged handle cannot make it map more than the segment
//! holds, and nobody can shrink the segment under a mapping (which would make reads fault).
//!
//! The handle ([`IPC_HANDLE_SIZE`] bytes, little-endian, the same on every platform) carries a
//! magic, a version, the tensor's dtype, shape, strides (up to [`IPC_MAX_NDIM`] axes) and byte
//! offset, the segment's size and a check sum over all of it. The check sum catches truncation
//! and corruption, not malice: what protects the importer is that everything the handle says is
//! validated against the segment.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::dtype::DType;
use crate::error::{Error, Result};

/// The size of a handle in bytes.
pub(crate) const IPC_HANDLE_SIZE: usize = 256;
/// The most axes a tensor described by a handle may have.
pub(crate) const IPC_MAX_NDIM: usize = 8;

const MAGIC: [u8; 8] = *b"DLBRIPC\0";
const VERSION: u32 = 1;
/// What the handle's memory is.
const KIND_HOST: u32 = 1;
const KIND_CUDA: u32 = 2;
const FLAG_READ_ONLY: u32 = 1;
/// Where the check sum sits: the last 8 bytes, over every byte before them.
const CHECK_AT: usize = IPC_HANDLE_SIZE - 8;
/// The bytes of a CUDA IPC memory handle (`CUipcMemHandle`).
pub(crate) const CUDA_IPC_BYTES: usize = 64;

/// A mapped memory file: `len` bytes at `base`, and the descriptor that names it.
#[derive(Debug)]
pub struct Segment {
    fd: OwnedFd,
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory, reached through raw pointers whose synchronisation
// is the users' business (as for every storage); the descriptor is a plain integer.
unsafe impl Send for Segment {}
// SAFETY: as for Send; `&Segment` only reads the fields.
unsafe impl Sync for Segment {}

fn os_error(what: &str) -> Error {
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::ENOMEM) | Some(libc::ENOSPC) | Some(libc::EMFILE) | Some(libc::ENFILE) => {
            Error::out_of_memory(format_args!("{what} failed: {err}"))
        }
        _ => Error::device(format_args!("{what} failed: {err}")),
    }
}

impl Segment {
    /// A new zero-filled segment of `len` bytes (at least 1: an empty file cannot be mapped),
    /// sealed at that size and mapped read-write.
    pub fn create(len: usize) -> Result<Segment> {
        let len = len.max(1);
        let size = libc::off_t::try_from(len).map_err(|_| {
            Error::out_of_memory(format_args!("a shared segment of {len} bytes is too large"))
        })?;
        // SAFETY: a NUL-terminated name and valid flags; the result is checked.
        let raw =
            unsafe { libc::memfd_create(c"dlbridge".as_ptr(), libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) };
        if raw < 0 {
            return Err(os_error("memfd_create"));
        }
        // SAFETY: `raw` is a new descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: plain system calls on our own descriptor; results are checked.
        unsafe {
            if libc::ftruncate(fd.as_raw_fd(), size) != 0 {
                return Err(os_error(&format!("sizing a shared segment to {len} bytes")));
            }
            let seals = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_SEAL;
            if libc::fcntl(fd.as_raw_fd(), libc::F_ADD_SEALS, seals) != 0 {
                return Err(os_error("sealing a shared segment"));
            }
        }
        Segment::map(fd, len)
    }

    /// Maps the segment `fd` names (a duplicate of it is kept; the caller keeps `fd`), after
    /// checking that it is a sealed memory file of exactly `expected_len` bytes.
    pub fn open(fd: BorrowedFd<'_>, expected_len: u64) -> Result<Segment> {
        // SAFETY: `stat` is plain old data; fstat fills it or fails.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a borrowed, open descriptor and a valid out-pointer.
        if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
            return Err(Error::invalid(format_args!(
                "the file descriptor {} cannot be inspected: {}",
                fd.as_raw_fd(),
                std::io::Error::last_os_error()
            )));
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            return Err(Error::invalid(
                "the file descriptor is not a dlbridge shared-memory segment (not a memory file)",
            ));
        }
        // SAFETY: a plain query on a borrowed descriptor.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        let needed = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
        if seals < 0 || seals & needed != needed {
            return Err(Error::invalid(
                "the file descriptor is not a dlbridge shared-memory segment (not sealed at its size)",
            ));
        }
        let actual = u64::try_from(st.st_size).unwrap_or(0);
        if actual != expected_len {
            return Err(Error::invalid(format_args!(
                "the handle says the segment holds {expected_len} bytes but it holds {actual}"
            )));
        }
        let len = usize::try_from(actual).ok().filter(|&n| n > 0).ok_or_else(|| {
            Error::invalid(format_args!("a shared segment of {actual} bytes cannot be mapped"))
        })?;
        let own = fd.try_clone_to_owned().map_err(|e| {
            Error::out_of_memory(format_args!("duplicating the segment's file descriptor failed: {e}"))
        })?;
        Segment::map(own, len)
    }

    fn map(fd: OwnedFd, len: usize) -> Result<Segment> {
        // SAFETY: a fresh shared mapping of `len` bytes of a file of exactly that size (sealed).
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(os_error(&format!("mapping a shared segment of {len} bytes")));
        }
        Ok(Segment { fd, base: base.cast(), len })
    }

    /// The first byte of the mapping (page aligned).
    pub fn base(&self) -> *mut u8 {
        self.base
    }
    /// The size of the segment in bytes.
    pub fn len(&self) -> usize {
        self.len
    }
    /// The descriptor (borrowed: it stays open while the segment lives).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, unmapped once; nothing reaches it any more (the
        // storage that owns the segment is gone). The descriptor closes with its field.
        unsafe { libc::munmap(self.base.cast(), self.len) };
    }
}

/// What a handle describes, decoded and checked for consistency (not yet against the segment).
#[derive(Debug, Clone, PartialEq)]
pub struct HandleInfo {
    /// Host memory in a segment, or CUDA memory behind an IPC handle.
    pub cuda: Option<CudaIpc>,
    /// The element type.
    pub dtype: DType,
    /// Extents.
    pub shape: Vec<i64>,
    /// Strides in elements.
    pub strides: Vec<i64>,
    /// The byte offset of the first element from the start of the segment (or allocation).
    pub byte_offset: u64,
    /// The segment's (or allocation's) size in bytes.
    pub segment_len: u64,
    /// Whether the tensor refuses writes.
    pub read_only: bool,
}

/// The CUDA part of a handle: the device and the driver's IPC handle.
#[derive(Debug, Clone, PartialEq)]
pub struct CudaIpc {
    /// The device index the memory lives on.
    pub device_id: i32,
    /// The driver's `CUipcMemHandle`.
    pub handle: [u8; CUDA_IPC_BYTES],
}

/// FNV-1a over `bytes`: cheap, and enough to catch truncation and corruption.
fn check_sum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// Writes the handle for `info`.
pub fn encode(info: &HandleInfo) -> Result<[u8; IPC_HANDLE_SIZE]> {
    let ndim = info.shape.len();
    if ndim > IPC_MAX_NDIM {
        return Err(Error::unsupported(format_args!(
            "a shared-memory handle describes at most {IPC_MAX_NDIM} axes; this tensor has {ndim}"
        )));
    }
    let mut h = [0u8; IPC_HANDLE_SIZE];
    let mut put = |at: usize, bytes: &[u8]| h[at..at + bytes.len()].copy_from_slice(bytes);
    put(0, &MAGIC);
    put(8, &VERSION.to_le_bytes());
    put(12, &(if info.cuda.is_some() { KIND_CUDA } else { KIND_HOST }).to_le_bytes());
    put(16, &[info.dtype.code(), info.dtype.bits()]);
    put(18, &info.dtype.lanes().to_le_bytes());
    put(20, &(ndim as u32).to_le_bytes());
    put(24, &(if info.read_only { FLAG_READ_ONLY } else { 0 }).to_le_bytes());
    put(28, &info.cuda.as_ref().map_or(0, |c| c.device_id).to_le_bytes());
    put(32, &info.segment_len.to_le_bytes());
    put(40, &info.byte_offset.to_le_bytes());
    for (i, (&n, &s)) in info.shape.iter().zip(&info.strides).enumerate() {
        put(48 + 8 * i, &n.to_le_bytes());
        put(112 + 8 * i, &s.to_le_bytes());
    }
    if let Some(c) = &info.cuda {
        put(176, &c.handle);
    }
    let sum = check_sum(&h[..CHECK_AT]);
    h[CHECK_AT..].copy_from_slice(&sum.to_le_bytes());
    Ok(h)
}

/// Reads a handle, refusing anything that is not exactly one intact handle of this version.
pub fn decode(bytes: &[u8]) -> Result<HandleInfo> {
    if bytes.len() != IPC_HANDLE_SIZE {
        return Err(Error::invalid(format_args!(
            "a dlbridge IPC handle is {IPC_HANDLE_SIZE} bytes, not {} (truncated or not a handle)",
            bytes.len()
        )));
    }
    if bytes[..8] != MAGIC {
        return Err(Error::invalid("not a dlbridge IPC handle (wrong magic)"));
    }
    let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let version = u32_at(8);
    if version != VERSION {
        return Err(Error::version(format_args!(
            "IPC handle version {version}; this dlbridge reads version {VERSION}"
        )));
    }
    if u64_at(CHECK_AT) != check_sum(&bytes[..CHECK_AT]) {
        return Err(Error::invalid("the IPC handle's check sum does not match (corrupted or forged)"));
    }
    let kind = u32_at(12);
    let dl = crate::abi::DLDataType {
        code: dlpark::ffi::DLDataTypeCode(bytes[16]),
        bits: bytes[17],
        lanes: u16::from_le_bytes([bytes[18], bytes[19]]),
    };
    let dtype = DType::from_dl(dl)?;
    let ndim = u32_at(20) as usize;
    if ndim > IPC_MAX_NDIM {
        return Err(Error::invalid(format_args!(
            "the IPC handle claims {ndim} axes (at most {IPC_MAX_NDIM})"
        )));
    }
    let flags = u32_at(24);
    if flags & !FLAG_READ_ONLY != 0 {
        return Err(Error::invalid(format_args!("the IPC handle has unknown flags {flags:#x}")));
    }
    let device_id = u32_at(28) as i32;
    let shape = (0..ndim).map(|i| u64_at(48 + 8 * i) as i64).collect();
    let strides = (0..ndim).map(|i| u64_at(112 + 8 * i) as i64).collect();
    let cuda = match kind {
        KIND_HOST => None,
        KIND_CUDA => Some(CudaIpc {
            device_id,
            handle: bytes[176..176 + CUDA_IPC_BYTES].try_into().expect("64 bytes"),
        }),
        _ => return Err(Error::invalid(format_args!("the IPC handle names an unknown memory kind {kind}"))),
    };
    Ok(HandleInfo {
        cuda,
        dtype,
        shape,
        strides,
        byte_offset: u64_at(40),
        segment_len: u64_at(32),
        read_only: flags & FLAG_READ_ONLY != 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `fd` is open in this process.
    fn is_open(fd: std::os::fd::RawFd) -> bool {
        // SAFETY: a query on a descriptor number; EBADF when it is not open.
        unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
    }

    fn info() -> HandleInfo {
        HandleInfo {
            cuda: None,
            dtype: DType::F32,
            shape: vec![2, 3],
            strides: vec![3, 1],
            byte_offset: 0,
            segment_len: 24,
            read_only: false,
        }
    }

    #[test]
    fn handles_round_trip_and_refuse_damage() {
        let h = encode(&info()).unwrap();
        assert_eq!(decode(&h).unwrap(), info());
        assert!(decode(&h[..100]).unwrap_err().message.contains("256 bytes, not 100"));
        for at in [0, 20, 40, 60, 200, 250] {
            let mut bad = h;
            bad[at] ^= 1;
            assert!(decode(&bad).is_err(), "a flipped byte at {at} was accepted");
        }
        let mut many = info();
        many.shape = vec![1; 9];
        many.strides = vec![1; 9];
        assert!(encode(&many).is_err());
    }

    #[test]
    #[cfg_attr(miri, ignore = "Miri does not run system calls")]
    fn segments_are_sealed_and_checked_against_their_size() {
        let s = Segment::create(5000).unwrap();
        // SAFETY: 5000 bytes of a fresh mapping.
        unsafe { s.base().add(4999).write(7) };
        let other = Segment::open(s.fd(), 5000).unwrap();
        // SAFETY: the same memory, mapped twice.
        assert_eq!(unsafe { other.base().add(4999).read() }, 7);
        assert!(Segment::open(s.fd(), 5001).unwrap_err().message.contains("holds 5000"));
        // SAFETY: a plain call on our own descriptor; it must fail because of the seals.
        assert_ne!(unsafe { libc::ftruncate(s.fd().as_raw_fd(), 1) }, 0);
        let fd = other.fd().as_raw_fd();
        drop(other);
        assert!(!is_open(fd));
        // A descriptor that is not a sealed memory file.
        let file = std::fs::File::open("Cargo.toml").unwrap();
        assert!(Segment::open(file.as_fd(), 10).is_err());
    }
}
