//! Owned by the ring buffer/perf work (being written).
