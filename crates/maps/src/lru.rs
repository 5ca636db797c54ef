//! Owned by the LRU/stack-trace work (being written).
