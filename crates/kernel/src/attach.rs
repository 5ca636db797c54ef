//! Owned by the objects work (being written).
