//! GPU memory of the devices that models opened, read from the driver when `/metrics` asks.
//! Without the `cuda` feature no device can be opened, and there is nothing to report.

/// One device's memory, device-wide (as Triton's DCGM-based metrics report it).
pub struct GpuMemory {
    /// As nvidia-smi writes it: `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub uuid: String,
    pub total_bytes: u64,
    pub used_bytes: u64,
}

#[cfg(feature = "cuda")]
mod opened {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use candle_core::cuda::cudarc::driver::CudaContext;
    use candle_core::Device;

    use super::{uuid_text, GpuMemory};

    static OPENED: Mutex<BTreeMap<usize, Arc<CudaContext>>> = Mutex::new(BTreeMap::new());

    pub fn remember(device: &Device) {
        if let Device::Cuda(d) = device {
            let context = d.cuda_stream().context().clone();
            let mut opened = OPENED.lock().unwrap_or_else(|e| e.into_inner());
            opened.entry(context.ordinal()).or_insert(context);
        }
    }

    /// A device whose query fails (a lost GPU) is left out rather than reported as zero.
    pub fn memory() -> Vec<GpuMemory> {
        let opened = OPENED.lock().unwrap_or_else(|e| e.into_inner());
        opened
            .values()
            .filter_map(|context| {
                let (free, total) = context.mem_get_info().ok()?;
                let uuid = context.uuid().ok()?;
                Some(GpuMemory {
                    uuid: uuid_text(&uuid.bytes.map(|b| b as u8)),
                    total_bytes: total as u64,
                    used_bytes: total.saturating_sub(free) as u64,
                })
            })
            .collect()
    }
}

#[cfg(feature = "cuda")]
pub use opened::{memory, remember};

#[cfg(not(feature = "cuda"))]
pub fn remember(_device: &candle_core::Device) {}

#[cfg(not(feature = "cuda"))]
pub fn memory() -> Vec<GpuMemory> {
    Vec::new()
}

#[cfg(any(feature = "cuda", test))]
fn uuid_text(bytes: &[u8; 16]) -> String {
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!(
        "GPU-{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn uuid_is_written_as_nvidia_smi_does() {
        let bytes = [
            0xc0, 0x6b, 0xbf, 0x33, 0xc2, 0x50, 0xca, 0x45, 0x57, 0x9b, 0x19, 0x13, 0x4b, 0x51,
            0x88, 0x44,
        ];
        assert_eq!(
            super::uuid_text(&bytes),
            "GPU-c06bbf33-c250-ca45-579b-19134b518844"
        );
    }
}
