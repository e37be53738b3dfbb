//! Uses dlbridge from another crate (see run.sh).

fn main() {
    let _ = dlbridge::dlpark::ffi::DLPACK_MAJOR_VERSION;
}
