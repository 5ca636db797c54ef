//! The operations a differential test applies, and the full observable outcome of applying one to
//! a map through [`MapOps`].
//!
//! Owns [`Op`], [`Cursor`], [`Outcome`] and [`apply`]. It knows nothing about comparing two maps
//! (that is the runner's job) nor about generating operations (the strategies').

use bpfmaps_abi::{BatchBuffers, MapOps, MapResult};

/// The byte every output buffer is filled with before a call, so that a byte an engine writes (or
/// fails to write) is visible in the [`Outcome`].
pub const SENTINEL: u8 = 0xa5;

/// Where a batch lookup starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Cursor {
    /// A NULL `in_batch`: start from the beginning.
    Start,
    /// The `out_batch` the same map returned from its previous batch lookup (or [`Cursor::Start`]
    /// when there was none), as a libbpf loop passes it.
    Continue,
    /// An explicit cursor value, written little-endian into a cursor-sized buffer (a bucket index
    /// for hash maps, an index key for arrays; both are 4 bytes).
    Raw(u32),
}

/// One map operation, as user space issues it through bpf(2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// `BPF_MAP_LOOKUP_ELEM`.
    Lookup {
        /// The key bytes.
        key: Vec<u8>,
        /// Lookup flags (0 or `BPF_F_LOCK` are the valid ones).
        flags: u64,
    },
    /// `BPF_MAP_UPDATE_ELEM`.
    Update {
        /// The key bytes.
        key: Vec<u8>,
        /// The user-space value bytes.
        value: Vec<u8>,
        /// Update flags (`BPF_ANY`, `BPF_NOEXIST`, `BPF_EXIST`, or invalid ones).
        flags: u64,
    },
    /// `BPF_MAP_DELETE_ELEM`.
    Delete {
        /// The key bytes.
        key: Vec<u8>,
    },
    /// `BPF_MAP_GET_NEXT_KEY`, from `key` or from the start when `None`.
    GetNextKey {
        /// The key to continue from.
        key: Option<Vec<u8>>,
    },
    /// `BPF_MAP_LOOKUP_AND_DELETE_ELEM`.
    LookupAndDelete {
        /// The key bytes.
        key: Vec<u8>,
        /// Flags (0 or `BPF_F_LOCK` are the valid ones).
        flags: u64,
    },
    /// `BPF_MAP_LOOKUP_BATCH`.
    LookupBatch {
        /// Where to start.
        cursor: Cursor,
        /// The capacity offered (`count` on entry).
        count: u32,
        /// `elem_flags`.
        elem_flags: u64,
        /// `flags`.
        flags: u64,
    },
    /// `BPF_MAP_LOOKUP_AND_DELETE_BATCH`.
    LookupAndDeleteBatch {
        /// Where to start.
        cursor: Cursor,
        /// The capacity offered (`count` on entry).
        count: u32,
        /// `elem_flags`.
        elem_flags: u64,
        /// `flags`.
        flags: u64,
    },
    /// `BPF_MAP_UPDATE_BATCH` of `keys.len()` elements.
    UpdateBatch {
        /// The keys, one per element.
        keys: Vec<Vec<u8>>,
        /// The user-space values, one per element.
        values: Vec<Vec<u8>>,
        /// `elem_flags`.
        elem_flags: u64,
        /// `flags`.
        flags: u64,
    },
    /// `BPF_MAP_DELETE_BATCH` of `keys.len()` keys.
    DeleteBatch {
        /// The keys, one per element.
        keys: Vec<Vec<u8>>,
        /// `elem_flags`.
        elem_flags: u64,
        /// `flags`.
        flags: u64,
    },
    /// `BPF_MAP_FREEZE`.
    Freeze,
}

impl Op {
    /// The operation's kind as a short name (`"lookup"`, `"update_batch"`, …), for counters and
    /// exception lists.
    pub fn kind(&self) -> &'static str {
        match self {
            Op::Lookup { .. } => "lookup",
            Op::Update { .. } => "update",
            Op::Delete { .. } => "delete",
            Op::GetNextKey { .. } => "get_next_key",
            Op::LookupAndDelete { .. } => "lookup_and_delete",
            Op::LookupBatch { .. } => "lookup_batch",
            Op::LookupAndDeleteBatch { .. } => "lookup_and_delete_batch",
            Op::UpdateBatch { .. } => "update_batch",
            Op::DeleteBatch { .. } => "delete_batch",
            Op::Freeze => "freeze",
        }
    }

    /// True for the operations whose result depends on iteration order (and so on the hash
    /// seed and bucket layout).
    pub fn is_order_dependent(&self) -> bool {
        matches!(
            self,
            Op::GetNextKey { key: Some(_) }
                | Op::LookupBatch { .. }
                | Op::LookupAndDeleteBatch { .. }
        )
    }
}

/// Everything user space can observe from one operation: the result (errno included) and every
/// buffer the kernel may write, filled with [`SENTINEL`] beforehand.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// The operation's result.
    pub result: MapResult<()>,
    /// The value buffer (lookups) or next-key buffer (get_next_key) after the call.
    pub value: Option<Vec<u8>>,
    /// The keys buffer of a batch lookup after the call.
    pub keys: Option<Vec<u8>>,
    /// The values buffer of a batch lookup after the call.
    pub values: Option<Vec<u8>>,
    /// `count` after a batch call.
    pub count: Option<u32>,
    /// The `out_batch` buffer after a batch lookup.
    pub cursor: Option<Vec<u8>>,
}

impl Outcome {
    fn result_only(result: MapResult<()>) -> Outcome {
        Outcome {
            result,
            value: None,
            keys: None,
            values: None,
            count: None,
            cursor: None,
        }
    }
}

/// Per-map state that outlives one operation: the cursor a [`Cursor::Continue`] passes.
#[derive(Clone, Debug, Default)]
pub struct MapState {
    /// The `out_batch` of the last batch lookup that returned 0 or `ENOENT`.
    pub last_cursor: Option<Vec<u8>>,
}

/// Applies `op` to `map` and returns what user space observes. `state` carries the batch cursor
/// between calls on the same map.
pub fn apply(map: &dyn MapOps, state: &mut MapState, op: &Op) -> Outcome {
    let info = map.info();
    let value_len = info.user_value_size();
    let key_len = info.key_size as usize;
    match op {
        Op::Lookup { key, flags } => {
            let mut value = vec![SENTINEL; value_len];
            let result = map.lookup(key, &mut value, *flags);
            Outcome {
                value: Some(value),
                ..Outcome::result_only(result)
            }
        }
        Op::Update { key, value, flags } => Outcome::result_only(map.update(key, value, *flags)),
        Op::Delete { key } => Outcome::result_only(map.delete(key)),
        Op::GetNextKey { key } => {
            let mut next = vec![SENTINEL; key_len];
            let result = map.get_next_key(key.as_deref(), &mut next);
            Outcome {
                value: Some(next),
                ..Outcome::result_only(result)
            }
        }
        Op::LookupAndDelete { key, flags } => {
            let mut value = vec![SENTINEL; value_len];
            let result = map.lookup_and_delete(key, &mut value, *flags);
            Outcome {
                value: Some(value),
                ..Outcome::result_only(result)
            }
        }
        Op::LookupBatch {
            cursor,
            count,
            elem_flags,
            flags,
        }
        | Op::LookupAndDeleteBatch {
            cursor,
            count,
            elem_flags,
            flags,
        } => {
            let cursor_len = map.batch_cursor_size();
            let in_batch: Option<Vec<u8>> = match cursor {
                Cursor::Start => None,
                Cursor::Continue => state.last_cursor.clone(),
                Cursor::Raw(raw) => {
                    let mut bytes = vec![0u8; cursor_len];
                    let raw = raw.to_le_bytes();
                    let n = cursor_len.min(raw.len());
                    bytes[..n].copy_from_slice(&raw[..n]);
                    Some(bytes)
                }
            };
            let capacity = *count as usize;
            let mut keys = vec![SENTINEL; capacity.saturating_mul(key_len)];
            let mut values = vec![SENTINEL; capacity.saturating_mul(value_len)];
            let mut out_batch = vec![SENTINEL; cursor_len];
            let mut buffers = BatchBuffers {
                keys: &mut keys,
                values: &mut values,
                count: *count,
            };
            let result = if matches!(op, Op::LookupBatch { .. }) {
                map.lookup_batch(
                    in_batch.as_deref(),
                    &mut out_batch,
                    &mut buffers,
                    *elem_flags,
                    *flags,
                )
            } else {
                map.lookup_and_delete_batch(
                    in_batch.as_deref(),
                    &mut out_batch,
                    &mut buffers,
                    *elem_flags,
                    *flags,
                )
            };
            let count = buffers.count;
            if result.is_ok()
                || result.err().and_then(|e| e.errno()) == Some(bpfmaps_abi::Errno::ENOENT)
            {
                state.last_cursor = Some(out_batch.clone());
            }
            Outcome {
                result,
                value: None,
                keys: Some(keys),
                values: Some(values),
                count: Some(count),
                cursor: Some(out_batch),
            }
        }
        Op::UpdateBatch {
            keys,
            values,
            elem_flags,
            flags,
        } => {
            let mut key_bytes: Vec<u8> = keys.concat();
            let mut value_bytes: Vec<u8> = values.concat();
            let count = u32::try_from(keys.len()).unwrap_or(u32::MAX);
            let mut buffers = BatchBuffers {
                keys: &mut key_bytes,
                values: &mut value_bytes,
                count,
            };
            let result = map.update_batch(&mut buffers, *elem_flags, *flags);
            Outcome {
                count: Some(buffers.count),
                ..Outcome::result_only(result)
            }
        }
        Op::DeleteBatch {
            keys,
            elem_flags,
            flags,
        } => {
            let mut key_bytes: Vec<u8> = keys.concat();
            let mut no_values: Vec<u8> = Vec::new();
            let count = u32::try_from(keys.len()).unwrap_or(u32::MAX);
            let mut buffers = BatchBuffers {
                keys: &mut key_bytes,
                values: &mut no_values,
                count,
            };
            let result = map.delete_batch(&mut buffers, *elem_flags, *flags);
            Outcome {
                count: Some(buffers.count),
                ..Outcome::result_only(result)
            }
        }
        Op::Freeze => Outcome::result_only(map.freeze()),
    }
}
