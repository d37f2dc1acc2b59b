//! Triton's system shared-memory extension, in the engine: the regions clients registered, and a
//! region as a source of input views and a sink for outputs. Every door only translates its
//! wire parameters into `SharedPlace`s. Off unless the operator allows it
//! (`--allow-client-shm`), as in Triton since 2.69; status answers either way. Texts are
//! Triton's.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::{Error, ErrorKind, Output, Parameters};
use crate::shm::{Mapping, OpenError, RESERVED_PREFIX};
use crate::tensors::{element_count, fixed_byte_size, DataType, Tensor};

pub const DISABLED: &str =
    "Client shared memory is disabled. Start the server with '--allow-client-shm=true' to enable.";

/// One registered region: `byte_size` bytes of the object `key` from `offset` on.
pub struct Region {
    pub name: String,
    pub key: String,
    pub offset: u64,
    pub byte_size: u64,
    mapping: Arc<Mapping>,
}

impl Region {
    /// In use by a request (a view of its bytes or a place for an output is held).
    fn in_use(self: &Arc<Self>) -> bool {
        Arc::strong_count(self) > 1 || Arc::strong_count(&self.mapping) > 1
    }

    /// The region, unless its object was truncated while mapped or no longer covers it.
    fn intact(&self) -> Result<(), Error> {
        if self.mapping.truncated() || !self.mapping.still_covered() {
            return Err(Error::invalid(format!(
                "shared memory region '{}' lost bytes: its object was truncated while the server \
                 used it; unregister the region and register it again",
                self.name
            )));
        }
        Ok(())
    }

    /// Triton's checks of `offset` and `byte_size` against the region.
    fn check_bounds(&self, offset: u64, byte_size: u64) -> Result<usize, Error> {
        let name = &self.name;
        if offset >= self.byte_size {
            return Err(Error::invalid(format!(
                "Invalid offset for shared memory region: '{name}'"
            )));
        }
        let end = offset.checked_add(byte_size).ok_or_else(|| {
            Error::invalid(format!(
                "Integer overflow detected: byte_size ({byte_size}) + offset ({offset}) exceeds \
                 maximum value ({}) for region '{name}'",
                u64::MAX
            ))
        })?;
        if end > self.byte_size {
            return Err(Error::invalid(format!(
                "Invalid offset + byte size for shared memory region: '{name}'"
            )));
        }
        Ok(offset as usize)
    }
}

/// The registry of regions.
pub struct SharedMemory {
    allowed: bool,
    max_regions: usize,
    max_bytes: u64,
    /// By name, in name order (as Triton lists them). A region unregistered while a request
    /// uses it stays, listed and unusable, until that request ends, as in Triton.
    regions: Mutex<BTreeMap<String, Entry>>,
}

struct Entry {
    region: Arc<Region>,
    unregistered: bool,
}

/// What status reports of a region.
pub struct RegionStatus {
    pub name: String,
    pub key: String,
    pub offset: u64,
    pub byte_size: u64,
}

impl SharedMemory {
    /// Client shared memory off: status answers `[]`, register and unregister are refused.
    pub fn off() -> SharedMemory {
        SharedMemory {
            allowed: false,
            max_regions: 0,
            max_bytes: 0,
            regions: Mutex::default(),
        }
    }

    /// Client shared memory on, with at most `max_regions` regions of `max_bytes` in all at
    /// once; installs the truncation guard.
    pub fn allowed(max_regions: usize, max_bytes: u64) -> std::io::Result<SharedMemory> {
        crate::shm::install_truncation_guard(max_regions)?;
        Ok(SharedMemory {
            allowed: true,
            max_regions,
            max_bytes,
            regions: Mutex::default(),
        })
    }

    /// (regions, bytes mapped), for the metrics; unregistered regions still in use count.
    pub fn usage(&self) -> (usize, u64) {
        let regions = self.regions();
        let bytes = regions.values().map(|e| e.region.byte_size).sum();
        (regions.len(), bytes)
    }

    fn regions(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        let mut regions = self.regions.lock().unwrap_or_else(|e| e.into_inner());
        regions.retain(|_, e| !e.unregistered || e.region.in_use());
        regions
    }

    /// Refuses with Triton's words while client shared memory is off.
    pub fn check_allowed(&self) -> Result<(), Error> {
        match self.allowed {
            true => Ok(()),
            false => Err(Error::unsupported(DISABLED)),
        }
    }

    /// Every region, or the one `name`d.
    pub fn status(&self, name: Option<&str>) -> Result<Vec<RegionStatus>, Error> {
        let regions = self.regions();
        let status = |r: &Region| RegionStatus {
            name: r.name.clone(),
            key: r.key.clone(),
            offset: r.offset,
            byte_size: r.byte_size,
        };
        match name {
            None => Ok(regions.values().map(|e| status(&e.region)).collect()),
            Some(name) => match regions.get(name) {
                Some(e) => Ok(vec![status(&e.region)]),
                None => Err(Error::not_found(format!(
                    "Unable to find system shared memory region: '{name}'"
                ))),
            },
        }
    }

    /// Maps `byte_size` bytes of the object `key` from `offset` on as region `name`.
    pub fn register(
        &self,
        name: &str,
        key: &str,
        offset: u64,
        byte_size: u64,
    ) -> Result<(), Error> {
        self.check_allowed()?;
        if name.is_empty() {
            return Err(Error::invalid(
                "'region name' is necessary to register system shared memory region",
            ));
        }
        let mut regions = self.regions();
        if regions.contains_key(name) {
            return Err(Error::new(
                ErrorKind::AlreadyExists,
                format!("shared memory region '{name}' already in manager"),
            ));
        }
        let mapped: u64 = regions.values().map(|e| e.region.byte_size).sum();
        let full = match () {
            _ if regions.len() >= self.max_regions => {
                format!("{} regions (--max-shm-regions)", self.max_regions)
            }
            _ if byte_size > self.max_bytes.saturating_sub(mapped) => format!(
                "{} bytes mapped with {mapped} in use (--max-shm-bytes)",
                self.max_bytes
            ),
            _ => String::new(),
        };
        if !full.is_empty() {
            return Err(Error::new(
                ErrorKind::Overloaded,
                format!(
                    "failed to register shared memory region '{name}': the server holds at most \
                     {full}; unregister regions first"
                ),
            ));
        }
        let mapping = Mapping::open(key, offset, byte_size).map_err(|e| match e {
            OpenError::InvalidKey(why) => Error::invalid(format!(
                "cannot register shared memory region '{name}' - invalid shm key '{key}': {why}"
            )),
            OpenError::ReservedKey => Error::invalid(format!(
                "cannot register shared memory region '{name}' with key '{key}' as the key \
                 contains the reserved prefix '{RESERVED_PREFIX}'"
            )),
            OpenError::Missing => {
                Error::invalid(format!("Unable to open shared memory region: '{key}'"))
            }
            OpenError::Refused(why) => Error::invalid(format!(
                "failed to register shared memory region '{name}': invalid args: {why}"
            )),
        })?;
        let region = Region {
            name: name.to_string(),
            key: key.to_string(),
            offset,
            byte_size,
            mapping: Arc::new(mapping),
        };
        regions.insert(
            name.to_string(),
            Entry {
                region: Arc::new(region),
                unregistered: false,
            },
        );
        Ok(())
    }

    /// Unregisters region `name`, or every region. A name not registered is no error, as in
    /// Triton; a region in use goes when its requests end.
    pub fn unregister(&self, name: Option<&str>) -> Result<(), Error> {
        self.check_allowed()?;
        let mut regions = self.regions();
        for (_, entry) in regions
            .iter_mut()
            .filter(|(n, _)| name.is_none_or(|w| w == *n))
        {
            entry.unregistered = true;
        }
        regions.retain(|_, e| !e.unregistered || e.region.in_use());
        Ok(())
    }

    /// CUDA shared memory, as Triton answers on a host without GPUs: no regions, nothing to
    /// unregister, and registration refused.
    pub fn cuda_status(&self, name: Option<&str>) -> Result<(), Error> {
        match name {
            None => Ok(()),
            Some(name) => Err(Error::not_found(format!(
                "Unable to find cuda shared memory region: '{name}'"
            ))),
        }
    }

    pub fn cuda_register(&self, name: &str) -> Result<(), Error> {
        self.check_allowed()?;
        Err(Error::invalid(format!(
            "failed to register CUDA shared memory region: '{name}', GPUs not supported"
        )))
    }

    pub fn cuda_unregister(&self) -> Result<(), Error> {
        self.check_allowed()
    }

    /// The region `name`, for a request.
    fn get(&self, name: &str) -> Result<Arc<Region>, Error> {
        let regions = self.regions();
        let region = (regions.get(name))
            .filter(|e| !e.unregistered)
            .map(|e| e.region.clone())
            .ok_or_else(|| {
                Error::not_found(format!("Unable to find shared memory region: '{name}'"))
            })?;
        region.intact()?;
        Ok(region)
    }

    /// The input `input` of `model` from its place: fixed-size data as a view of the region,
    /// BYTES copied out first (so that the client cannot change a length prefix after it was
    /// checked). The region is added to `used`.
    pub(super) fn input(
        &self,
        model: &str,
        input: &SharedInput,
        max_elements: u64,
        used: &mut Vec<Arc<Region>>,
    ) -> Result<Tensor, Error> {
        let place = &input.place;
        let region = self.get(&place.region)?;
        let start = region.check_bounds(place.offset, place.byte_size)?;
        let count = element_count(&input.shape, max_elements)
            .map_err(|e| Error::invalid(format!("input '{}': {e}", input.name)))?;
        if let Some(expected) = fixed_byte_size(input.datatype, count) {
            if expected != place.byte_size {
                return Err(Error::invalid(format!(
                    "input byte size mismatch for input '{}' for model '{model}'. Expected \
                     {expected}, got {}",
                    input.name, place.byte_size
                )));
            }
        }
        let view = region.mapping.view(start, place.byte_size as usize);
        let data = match input.datatype {
            DataType::Bytes => Bytes::copy_from_slice(&view),
            _ => view,
        };
        used.push(region);
        Tensor::new(input.datatype, input.shape.clone(), data, max_elements)
            .map_err(|e| Error::invalid(format!("input '{}': {e}", input.name)))
    }

    /// Where an output goes: its region, checked, and the place in it.
    pub(super) fn output(&self, place: &SharedPlace) -> Result<Sink, Error> {
        let region = self.get(&place.region)?;
        let start = region.check_bounds(place.offset, place.byte_size)?;
        Ok(Sink {
            region,
            start,
            byte_size: place.byte_size,
        })
    }
}

/// A place in a region for one output.
pub(super) struct Sink {
    pub region: Arc<Region>,
    start: usize,
    byte_size: u64,
}

impl Sink {
    /// Writes output `name`'s bytes into the place, which must hold them.
    pub fn write(&self, name: &str, data: &[u8]) -> Result<(), Error> {
        if data.len() as u64 > self.byte_size {
            return Err(Error::invalid(format!(
                "shared memory size specified with the request for output '{name}' ({} bytes) \
                 should be at least {} bytes to hold the results",
                self.byte_size,
                data.len()
            )));
        }
        self.region.mapping.write(self.start, data);
        Ok(())
    }
}

/// After the model ran: writes each output that has a sink into it (`outputs` and `sinks` in
/// the order the request asked), copies any other output that is still a view of a region (an
/// identity model's), and fails the request if a region it used lost bytes meanwhile. The copy
/// keeps the answer from changing, or faulting, if the client rewrites the region while the
/// answer is being sent.
pub(super) fn place_outputs(
    outputs: &mut [Output],
    sinks: &[Option<Sink>],
    used: &[Arc<Region>],
) -> Result<(), Error> {
    for (output, sink) in outputs.iter_mut().zip(sinks) {
        if let Some(sink) = sink {
            sink.write(output.name, &output.tensor.data)?;
            output.tensor.data = Bytes::new();
            output.in_shared_memory = true;
        }
    }
    for output in outputs.iter_mut() {
        if used.iter().any(|r| r.mapping.contains(&output.tensor.data)) {
            output.tensor.data = Bytes::copy_from_slice(&output.tensor.data);
        }
    }
    let written = sinks.iter().flatten().map(|sink| &sink.region);
    used.iter().chain(written).try_for_each(|r| r.intact())
}

/// Where a tensor lies in a region: the parameters `shared_memory_region`,
/// `shared_memory_offset` and `shared_memory_byte_size`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedPlace<'a> {
    pub region: Cow<'a, str>,
    pub offset: u64,
    pub byte_size: u64,
}

pub const PARAMETERS: [&str; 3] = [
    "shared_memory_region",
    "shared_memory_offset",
    "shared_memory_byte_size",
];

impl<'a> SharedPlace<'a> {
    /// The place tensor `tensor`'s parameters name, if any. Offset and size without a region
    /// are refused (never ignored); a size left out is 0, as in Triton's REST door.
    pub fn of(parameters: &Parameters<'a>, tensor: &str) -> Result<Option<SharedPlace<'a>>, Error> {
        let region = match parameters.get(PARAMETERS[0]) {
            None => {
                if let Some(key) = PARAMETERS[1..].iter().find(|k| parameters.get(k).is_some()) {
                    return Err(Error::invalid(format!(
                        "'{key}' can not be specified without 'shared_memory_region' parameter \
                         for tensor '{tensor}'"
                    )));
                }
                return Ok(None);
            }
            Some(super::ParamValue::Str(s)) => s.clone(),
            Some(_) => {
                return Err(Error::invalid(format!(
                    "invalid value type for 'shared_memory_region' parameter for tensor \
                     '{tensor}', expected a string."
                )))
            }
        };
        Ok(Some(SharedPlace {
            region,
            offset: parameters.get_u64(PARAMETERS[1])?.unwrap_or(0),
            byte_size: parameters.get_u64(PARAMETERS[2])?.unwrap_or(0),
        }))
    }
}

/// An input whose bytes lie in a region.
#[derive(Debug)]
pub struct SharedInput<'a> {
    pub name: Cow<'a, str>,
    pub datatype: DataType,
    pub shape: Vec<u64>,
    pub place: SharedPlace<'a>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An object of `size` bytes in /dev/shm, removed on drop.
    struct Object(String);

    impl Object {
        fn new(tag: &str, size: u64) -> Object {
            let name = format!("tensord-unit-{tag}-{}", std::process::id());
            let file = std::fs::File::create(format!("/dev/shm/{name}")).unwrap();
            file.set_len(size).unwrap();
            Object(format!("/{name}"))
        }
    }

    impl Drop for Object {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(format!("/dev/shm{}", self.0));
        }
    }

    fn input(
        region: &str,
        datatype: DataType,
        shape: &[u64],
        offset: u64,
        size: u64,
    ) -> SharedInput<'static> {
        SharedInput {
            name: "INPUT0".into(),
            datatype,
            shape: shape.to_vec(),
            place: SharedPlace {
                region: region.to_string().into(),
                offset,
                byte_size: size,
            },
        }
    }

    #[test]
    fn registry_lists_refuses_duplicates_and_caps() {
        let (a, b) = (Object::new("reg-a", 4096), Object::new("reg-b", 64));
        let shm = SharedMemory::allowed(2, 4096 + 64).unwrap();
        shm.register("b", &b.0, 0, 64).unwrap();
        shm.register("a", &a.0, 0, 4096).unwrap();
        let names: Vec<String> = shm
            .status(None)
            .unwrap()
            .into_iter()
            .map(|r| r.name)
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(shm.usage(), (2, 4096 + 64));
        let e = shm.register("a", &b.0, 0, 8).unwrap_err();
        assert_eq!(e.kind, ErrorKind::AlreadyExists);
        assert!(!e.message.contains(&a.0), "{}", e.message);
        shm.unregister(Some("b")).unwrap();
        let e = shm.register("c", &a.0, 0, 128).unwrap_err();
        assert_eq!(e.kind, ErrorKind::Overloaded);
        assert!(e.message.contains("--max-shm-bytes"), "{}", e.message);
        shm.unregister(None).unwrap();
        assert_eq!(shm.usage(), (0, 0));
        let off = SharedMemory::off();
        assert_eq!(off.register("a", &a.0, 0, 8).unwrap_err().message, DISABLED);
        assert!(off.status(None).unwrap().is_empty());
    }

    #[test]
    fn inputs_are_views_checked_against_the_region() {
        let object = Object::new("views", 8192);
        let shm = SharedMemory::allowed(4, 1 << 20).unwrap();
        shm.register("r", &object.0, 4096, 128).unwrap();
        let mut used = Vec::new();
        let tensor = shm
            .input(
                "m",
                &input("r", DataType::Int32, &[1, 16], 64, 64),
                1 << 20,
                &mut used,
            )
            .unwrap();
        let mapping = used[0].mapping.clone();
        assert!(mapping.contains(&tensor.data), "a view, not a copy");
        let message = |i: SharedInput| {
            shm.input("m", &i, 1 << 20, &mut Vec::new())
                .unwrap_err()
                .message
        };
        assert_eq!(
            message(input("r", DataType::Int32, &[1, 16], 0, 60)),
            "input byte size mismatch for input 'INPUT0' for model 'm'. Expected 64, got 60"
        );
        assert_eq!(
            message(input("r", DataType::Int32, &[1, 16], 128, 64)),
            "Invalid offset for shared memory region: 'r'"
        );
        assert_eq!(
            message(input("r", DataType::Int32, &[1, 16], 65, 64)),
            "Invalid offset + byte size for shared memory region: 'r'"
        );
        assert!(
            message(input("r", DataType::Uint8, &[1], 32, u64::MAX - 31)).starts_with(
                "Integer overflow detected: byte_size (18446744073709551584) + offset (32)"
            )
        );
        assert_eq!(
            message(input("x", DataType::Int32, &[1], 0, 4)),
            "Unable to find shared memory region: 'x'"
        );
        // BYTES are copied out before their prefixes are walked.
        let bytes = shm
            .input(
                "m",
                &input("r", DataType::Bytes, &[1], 0, 4),
                1 << 20,
                &mut used,
            )
            .unwrap();
        assert!(!mapping.contains(&bytes.data));
        // Unregistered while a request holds it: listed until the request lets go.
        shm.unregister(None).unwrap();
        assert_eq!(shm.status(None).unwrap().len(), 1);
        assert!(shm
            .input(
                "m",
                &input("r", DataType::Int32, &[1, 16], 0, 64),
                1 << 20,
                &mut Vec::new()
            )
            .is_err());
        drop((tensor, bytes, used, mapping));
        assert!(shm.status(None).unwrap().is_empty());
    }
}
