#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| tensord::fuzzing::grpc_message(data));
