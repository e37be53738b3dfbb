//! Devices: validation of a `DLDevice` from C or from a foreign tensor, and the one place that
//! decides whether a device runtime can serve a request. Host memory always can; CUDA and pinned
//! host memory need the CUDA driver (`crate::cuda`), a GPU and a device with that index, and
//! answer `ErrorKind::Device` saying which is missing. Without them such tensors can still be
//! imported, viewed and exported as they are.

use crate::abi::{DLDevice, DLDeviceType};
use crate::error::{Error, Result};

/// DLPack device type values, as plain integers.
pub(crate) mod code {
    pub const CPU: u32 = 1;
    pub const CUDA: u32 = 2;
    pub const CUDA_HOST: u32 = 3;
    /// The highest device type DLPack 1.3 defines (kDLTrn).
    pub const LAST_KNOWN: u32 = 18;
}

/// The kinds of memory dlbridge understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeviceKind {
    /// Host memory (DLPack's kDLCPU).
    Cpu,
    /// Memory of a CUDA device (kDLCUDA).
    Cuda,
    /// Pinned (page-locked) host memory from the CUDA driver (kDLCUDAHost), which the CPU reads
    /// and writes directly and GPUs reach by DMA.
    CudaHost,
}

/// Where a tensor's memory lives: a kind and a device index (0 for the CPU).
///
/// ```
/// use dlbridge::{Device, DeviceKind};
///
/// let gpu1 = Device::cuda(1);
/// assert_eq!((gpu1.kind, gpu1.id), (DeviceKind::Cuda, 1));
/// assert_eq!(gpu1.to_string(), "cuda:1");
/// assert!(Device::CPU.is_host_accessible() && !gpu1.is_host_accessible());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Device {
    /// The kind of memory.
    pub kind: DeviceKind,
    /// The device index (never negative; 0 for the CPU).
    pub id: i32,
}

impl Device {
    /// Host memory.
    pub const CPU: Device = Device { kind: DeviceKind::Cpu, id: 0 };

    /// CUDA device `id`'s memory.
    pub const fn cuda(id: i32) -> Device {
        Device { kind: DeviceKind::Cuda, id }
    }

    /// Pinned host memory, allocated through CUDA device `id`'s driver context.
    pub const fn cuda_host(id: i32) -> Device {
        Device { kind: DeviceKind::CudaHost, id }
    }

    /// Checks a device handed to us. Unknown device types and negative ids are invalid; device
    /// types DLPack defines but dlbridge does not handle (OpenCL, Vulkan, Metal, ROCm, …) are
    /// unsupported.
    pub fn from_dl(d: DLDevice) -> Result<Device> {
        let ty = d.device_type.0;
        let kind = match ty {
            code::CPU => DeviceKind::Cpu,
            code::CUDA => DeviceKind::Cuda,
            code::CUDA_HOST => DeviceKind::CudaHost,
            4 | 7..=code::LAST_KNOWN => {
                return Err(Error::unsupported(format_args!(
                    "device type {ty} ({}) is not handled by dlbridge (it handles kDLCPU, kDLCUDA and kDLCUDAHost)",
                    type_name(ty)
                )));
            }
            _ => {
                return Err(Error::invalid(format_args!(
                    "device type {ty} is not a DLPack 1.3 device type (known types are 1..=4 and 7..=18)"
                )));
            }
        };
        if d.device_id < 0 {
            return Err(Error::invalid(format_args!("device id {} is negative", d.device_id)));
        }
        Ok(Device { kind, id: d.device_id })
    }

    /// The DLPack struct for this device.
    pub fn to_dl(self) -> DLDevice {
        let ty = match self.kind {
            DeviceKind::Cpu => code::CPU,
            DeviceKind::Cuda => code::CUDA,
            DeviceKind::CudaHost => code::CUDA_HOST,
        };
        DLDevice { device_type: DLDeviceType(ty), device_id: self.id }
    }

    /// Whether the CPU can read and write this memory directly (host and pinned host memory).
    pub fn is_host_accessible(self) -> bool {
        matches!(self.kind, DeviceKind::Cpu | DeviceKind::CudaHost)
    }

    /// Fails unless a runtime for this device is available to allocate and copy: for CUDA and
    /// pinned memory, a driver library, a GPU and a device with this index.
    pub(crate) fn ensure_runtime(self) -> Result<()> {
        match self.kind {
            DeviceKind::Cpu => Ok(()),
            DeviceKind::Cuda | DeviceKind::CudaHost => {
                crate::cuda::driver().map_err(|e| Error::device(format_args!("{self}: {}", e.message)))?;
                let count = crate::cuda::device_count();
                if self.id >= count {
                    return Err(Error::device(format_args!(
                        "{self} does not exist: the CUDA driver reports {count} device(s)"
                    )));
                }
                Ok(())
            }
        }
    }
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.kind {
            DeviceKind::Cpu => write!(f, "cpu"),
            DeviceKind::Cuda => write!(f, "cuda:{}", self.id),
            DeviceKind::CudaHost if self.id == 0 => write!(f, "cuda_host"),
            DeviceKind::CudaHost => write!(f, "cuda_host:{}", self.id),
        }
    }
}

fn type_name(ty: u32) -> &'static str {
    match ty {
        4 => "kDLOpenCL",
        7 => "kDLVulkan",
        8 => "kDLMetal",
        9 => "kDLVPI",
        10 => "kDLROCM",
        11 => "kDLROCMHost",
        12 => "kDLExtDev",
        13 => "kDLCUDAManaged",
        14 => "kDLOneAPI",
        15 => "kDLWebGPU",
        16 => "kDLHexagon",
        17 => "kDLMAIA",
        18 => "kDLTrn",
        _ => "reserved",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    fn dl(ty: u32, id: i32) -> DLDevice {
        DLDevice { device_type: DLDeviceType(ty), device_id: id }
    }

    #[test]
    fn validates_device_types() {
        assert_eq!(Device::from_dl(dl(1, 0)).unwrap(), Device::CPU);
        assert_eq!(Device::from_dl(dl(2, 1)).unwrap().to_string(), "cuda:1");
        assert_eq!(Device::from_dl(dl(7, 0)).unwrap_err().kind, ErrorKind::Unsupported);
        assert_eq!(Device::from_dl(dl(5, 0)).unwrap_err().kind, ErrorKind::InvalidArgument);
        assert_eq!(Device::from_dl(dl(99, 0)).unwrap_err().kind, ErrorKind::InvalidArgument);
        assert_eq!(Device::from_dl(dl(0, 0)).unwrap_err().kind, ErrorKind::InvalidArgument);
        assert_eq!(Device::from_dl(dl(1, -1)).unwrap_err().kind, ErrorKind::InvalidArgument);
    }

    #[test]
    fn only_host_has_a_runtime_without_cuda() {
        assert!(Device::CPU.ensure_runtime().is_ok());
        let cuda = Device { kind: DeviceKind::Cuda, id: 0 };
        if crate::cuda::device_count() == 0 {
            assert_eq!(cuda.ensure_runtime().unwrap_err().kind, ErrorKind::Device);
        }
        let missing = Device { kind: DeviceKind::Cuda, id: crate::cuda::device_count() };
        assert_eq!(missing.ensure_runtime().unwrap_err().kind, ErrorKind::Device);
        assert!(!cuda.is_host_accessible());
        assert!(Device { kind: DeviceKind::CudaHost, id: 0 }.is_host_accessible());
    }
}
