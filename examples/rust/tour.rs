//! A tour of dlbridge's Rust API: `cargo run --release --features ndarray --example tour`.
//!
//! Each step says whether it shares memory or copies it, and checks that it does.

use dlbridge::{DType, Device, ErrorKind, Result, Tensor};
use ndarray::{Array2, s};

fn main() -> Result<()> {
    // A tensor over a Vec's own buffer (no copy), and a zeroed one.
    let t = Tensor::from_vec((0..12).map(|i| i as f32).collect(), &[3, 4])?;
    println!("t: {t:?}");
    let z = Tensor::zeros(&[2, 2], DType::F64, Device::CPU)?;
    assert_eq!(z.as_slice::<f64>()?, &[0.0; 4]);

    // Views share memory: a transpose, and column 1 backwards.
    let tr = t.view(&[4, 3], Some(&[1, 4]), 0)?;
    let col = t.view(&[3], Some(&[-4]), 9)?;
    assert!(tr.shares_memory(&t) && col.shares_memory(&t));
    println!("t transposed (shared): {:?}", tr.to_vec::<f32>()?);
    println!("column 1 backwards (shared): {:?}", col.to_vec::<f32>()?);

    // Copies and casts make new row-major memory.
    let c = tr.copy()?;
    assert!(!c.shares_memory(&t) && c.is_contiguous());
    let ints = col.cast(DType::I32)?;
    println!("column 1 as int32 (copied): {:?}", ints.as_slice::<i32>()?);

    // Typed access is checked: the dtype must match, and writing needs the only reference.
    assert_eq!(t.as_slice::<f64>().unwrap_err().kind(), ErrorKind::InvalidArgument);
    let mut own = c;
    own.as_slice_mut::<f32>()?[0] = -1.0;
    let alias = own.alias();
    let refused = own.as_slice_mut::<f32>().unwrap_err();
    println!("writing while an alias lives is refused: {refused}");
    drop(alias);

    // ndarray: a zero-copy view in the tensor's own layout, and an Array taken over.
    let view = tr.as_array::<f32>()?;
    println!("ndarray view of the transpose:\n{view}");
    let mut a = Array2::<i64>::from_shape_fn((2, 3), |(i, j)| (10 * i + j) as i64);
    a.slice_mut(s![.., 0]).fill(7);
    let from_a = Tensor::from_array(a.reversed_axes())?;
    println!("an ndarray Array taken over (strides {:?}): {:?}", from_a.strides(), from_a.to_vec::<i64>()?);

    // DLPack: export (shared; an owned value whose drop runs the deleter), and import back.
    let exported = t.to_dlpack()?;
    let dl = exported.validate().expect("our exports are valid DLPack");
    println!("exported DLPack tensor: shape {:?}, strides {:?}", dl.shape(), dl.strides());
    let back = Tensor::from_dlpack(exported)?;
    assert!(back.shares_memory(&t));
    println!("imported back (shared): {:?}", back.as_slice::<f32>()?);
    Ok(())
}
