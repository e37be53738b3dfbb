//! Uses dlbridge from another crate, as a user's crate would (see run.sh): the API at the crate
//! root, DLPack through the re-exported dlpark, and the ndarray views.

use dlbridge::{DType, Device, Tensor};

fn main() -> dlbridge::Result<()> {
    let t = Tensor::from_array(ndarray::Array2::from_shape_fn((2, 3), |(i, j)| (10 * i + j) as f32))?;
    let tr = t.view(&[3, 2], Some(&[1, 3]), 0)?;
    assert_eq!(tr.as_array::<f32>()?, t.as_array::<f32>()?.t().into_dyn());
    let mut z = Tensor::zeros(&[2, 2], DType::I32, Device::CPU)?;
    z.as_array_mut::<i32>()?[[1, 1]] = 4;
    assert_eq!(z.as_slice::<i32>()?, &[0, 0, 0, 4]);
    let exported: dlbridge::dlpark::versioned::Dlpack = t.to_dlpack()?;
    assert!(Tensor::from_dlpack(exported)?.shares_memory(&t));
    println!("dlbridge from a dependent: {:?}", tr.to_vec::<f32>()?);
    Ok(())
}
