#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| p2p_network::fuzz_targets::task_lane(data));
