use dlbridge::{DType, Device, Tensor};

fn main() -> dlbridge::Result<()> {
    // A tensor over a Vec's own buffer, and a transposed view of it: both share the memory.
    let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], &[2, 3])?;
    let tr = t.view(&[3, 2], Some(&[1, 3]), 0)?;
    assert!(tr.shares_memory(&t));

    // A cast copies into new row-major memory; typed access checks the dtype.
    let ints = tr.cast(DType::I64)?;
    assert_eq!(ints.as_slice::<i64>()?, &[1, 4, 2, 5, 3, 6]);

    // DLPack out and back in: an owned export (dropping it runs its deleter), the same memory.
    let back = Tensor::from_dlpack(t.to_dlpack()?)?;
    assert!(back.shares_memory(&t) && back.device() == Device::CPU);
    println!("{:?} -> {:?}", tr.to_vec::<f32>()?, ints.as_slice::<i64>()?);
    Ok(())
}
