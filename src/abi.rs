//! The DLPack 1.3 ABI structs, in one place. They come from `dlpark::ffi` (the crate's bindgen
//! output of the official header); this module re-exports them and pins their layout at compile
//! time against the sizes and offsets of the DLPack 1.3 header, so a dlpark release that changed a
//! struct would stop the build instead of corrupting memory. `DLDeviceType` and `DLDataTypeCode`
//! are transparent integers there, so any value C hands us is a valid Rust value.

pub use dlpark::DlpackFlags;
pub use dlpark::ffi::{
    DLDataType, DLDataTypeCode, DLDevice, DLDeviceType, DLManagedTensor, DLManagedTensorVersioned,
    DLPackVersion, DLTensor,
};

/// The DLPack version dlbridge speaks and writes into versioned exports.
pub const DLPACK_MAJOR: u32 = 1;
pub const DLPACK_MINOR: u32 = 3;

pub const FLAG_READ_ONLY: u64 = 1 << 0;
pub const FLAG_IS_COPIED: u64 = 1 << 1;
pub const FLAG_IS_SUBBYTE_TYPE_PADDED: u64 = 1 << 2;

macro_rules! assert_layout {
    ($t:ty, size $size:expr, align $align:expr $(, $field:ident @ $off:expr)*) => {
        const _: () = {
            assert!(std::mem::size_of::<$t>() == $size);
            assert!(std::mem::align_of::<$t>() == $align);
            $(assert!(std::mem::offset_of!($t, $field) == $off);)*
        };
    };
}

assert_layout!(DLPackVersion, size 8, align 4, major @ 0, minor @ 4);
assert_layout!(DLDevice, size 8, align 4, device_type @ 0, device_id @ 4);
assert_layout!(DLDataType, size 4, align 2, code @ 0, bits @ 1, lanes @ 2);
assert_layout!(DLTensor, size 48, align 8,
    data @ 0, device @ 8, ndim @ 16, dtype @ 20, shape @ 24, strides @ 32, byte_offset @ 40);
assert_layout!(DLManagedTensor, size 64, align 8, dl_tensor @ 0, manager_ctx @ 48, deleter @ 56);
assert_layout!(DLManagedTensorVersioned, size 80, align 8,
    version @ 0, manager_ctx @ 8, deleter @ 16, flags @ 24, dl_tensor @ 32);

const _: () = {
    assert!(dlpark::ffi::DLPACK_MAJOR_VERSION == DLPACK_MAJOR);
    assert!(dlpark::ffi::DLPACK_MINOR_VERSION == DLPACK_MINOR);
    assert!(dlpark::ffi::DLPACK_FLAG_BITMASK_READ_ONLY as u64 == FLAG_READ_ONLY);
    assert!(dlpark::ffi::DLPACK_FLAG_BITMASK_IS_COPIED as u64 == FLAG_IS_COPIED);
    assert!(dlpark::ffi::DLPACK_FLAG_BITMASK_IS_SUBBYTE_TYPE_PADDED as u64 == FLAG_IS_SUBBYTE_TYPE_PADDED);
    assert!(std::mem::size_of::<DlpackFlags>() == 8);
};
