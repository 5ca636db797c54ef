//! Owned by the syscall/map work (being written).
