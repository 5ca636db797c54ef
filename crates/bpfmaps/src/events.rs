//! Event streams: the records of a RINGBUF or the samples of a PERF_EVENT_ARRAY, on either engine,
//! through the engine-neutral consumers of `bpfmaps-abi`.

use std::time::Duration;

use bpfmaps_abi::consumer::{PerfEvent, RingBufConsumer};
use bpfmaps_abi::{Errno, MapType, RingBufMemory};
use bpfmaps_kernel::perf::{open_perf_buffer, KernelPerfBuffer, PerfBufferConfig};
use bpfmaps_kernel::ringbuf::KernelRingBuf;

use bpfmaps_maps::perf_event_array::{PerfBuffer, PerfEventArray, PerfRing, PerfWaiter};
use bpfmaps_maps::ringbuf::RingBuf;

use crate::engine::{Engine, Map};

/// Data pages per CPU of a user-engine perf buffer (libbpf's default page count is 8 too).
const USER_PERF_PAGES: u32 = 8;

/// One item of an event stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A record: a ring buffer record (`cpu` is `None`) or a perf sample from `cpu`.
    Record {
        /// The CPU whose perf ring carried it; `None` for a ring buffer.
        cpu: Option<u32>,
        /// The payload (for perf samples, `raw_size` bytes, padding included, as libbpf gives).
        data: Vec<u8>,
    },
    /// The producer dropped `count` perf samples on `cpu` because the ring was full.
    Lost {
        /// The CPU.
        cpu: u32,
        /// Samples lost.
        count: u64,
    },
}

/// Why an event stream could not be opened or read.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// The map is neither a RINGBUF nor a PERF_EVENT_ARRAY.
    #[error("{0} maps carry no event stream (expected ringbuf or perf_event_array)")]
    NotAStream(bpfmaps_abi::MapType),
    /// The kernel engine failed to set up the stream.
    #[error("kernel engine: {0}")]
    Kernel(#[from] bpfmaps_kernel::Error),
    /// The user engine failed to set up the stream.
    #[error("user engine: {0}")]
    User(String),
    /// Reading failed.
    #[error("reading {engine}-engine events failed: {errno}")]
    Read {
        /// The engine.
        engine: Engine,
        /// Why.
        errno: Errno,
    },
}

/// A stream of events from one map.
pub struct EventStream {
    inner: Box<dyn EventSource>,
}

/// An engine-specific event source.
trait EventSource: Send {
    fn next_event(&mut self, timeout: Option<Duration>) -> Result<Option<Event>, EventError>;
}

impl EventStream {
    /// Opens the stream of `map`.
    pub fn open(map: &Map) -> Result<EventStream, EventError> {
        let info = map.info();
        let inner: Box<dyn EventSource> = match (info.map_type, map.as_kernel(), map.as_user()) {
            (MapType::Ringbuf, Some(k), _) => Box::new(Ring {
                consumer: KernelRingBuf::new(k)?.into_consumer(),
                engine: Engine::Kernel,
            }),
            (MapType::PerfEventArray, Some(k), _) => {
                Box::new(Perf(open_perf_buffer(k, PerfBufferConfig::default())?))
            }
            (MapType::Ringbuf, None, Some(u)) => {
                let ring = u
                    .backend()
                    .as_any()
                    .downcast_ref::<RingBuf>()
                    .ok_or_else(|| {
                        EventError::User(
                            "the map is not backed by its type's implementation".into(),
                        )
                    })?;
                Box::new(Ring {
                    consumer: RingBufConsumer::new(
                        ring.consumer()
                            .map_err(|e| EventError::User(e.to_string()))?,
                    ),
                    engine: Engine::User,
                })
            }
            (MapType::PerfEventArray, None, Some(u)) => {
                let array = u
                    .backend()
                    .as_any()
                    .downcast_ref::<PerfEventArray>()
                    .ok_or_else(|| {
                        EventError::User(
                            "the map is not backed by its type's implementation".into(),
                        )
                    })?;
                let buffer = PerfBuffer::new(array, USER_PERF_PAGES)
                    .map_err(|e| EventError::User(e.to_string()))?;
                Box::new(UserPerf(buffer.into_consumer()))
            }
            (t, _, _) => return Err(EventError::NotAStream(t)),
        };
        Ok(EventStream { inner })
    }

    /// The next event, waiting up to `timeout` (`None`: forever); `None` when the time ran out.
    pub fn next_event(&mut self, timeout: Option<Duration>) -> Result<Option<Event>, EventError> {
        self.inner.next_event(timeout)
    }
}

struct Ring<M: RingBufMemory> {
    consumer: RingBufConsumer<M>,
    engine: Engine,
}

impl<M: RingBufMemory> EventSource for Ring<M> {
    fn next_event(&mut self, timeout: Option<Duration>) -> Result<Option<Event>, EventError> {
        match self.consumer.next_record(timeout) {
            Ok(Some(data)) => Ok(Some(Event::Record { cpu: None, data })),
            Ok(None) => Ok(None),
            Err(errno) => Err(EventError::Read {
                engine: self.engine,
                errno,
            }),
        }
    }
}

struct UserPerf(bpfmaps_abi::consumer::PerfBufConsumer<PerfRing, PerfWaiter>);

impl EventSource for UserPerf {
    fn next_event(&mut self, timeout: Option<Duration>) -> Result<Option<Event>, EventError> {
        perf_event(self.0.next_event(timeout), Engine::User)
    }
}

fn perf_event(
    r: Result<Option<PerfEvent>, Errno>,
    engine: Engine,
) -> Result<Option<Event>, EventError> {
    match r {
        Ok(Some(PerfEvent::Sample { cpu, data })) => Ok(Some(Event::Record {
            cpu: Some(cpu),
            data,
        })),
        Ok(Some(PerfEvent::Lost { cpu, count })) => Ok(Some(Event::Lost { cpu, count })),
        Ok(None) => Ok(None),
        Err(errno) => Err(EventError::Read { engine, errno }),
    }
}

struct Perf(KernelPerfBuffer);

impl EventSource for Perf {
    fn next_event(&mut self, timeout: Option<Duration>) -> Result<Option<Event>, EventError> {
        perf_event(self.0.next_event(timeout), Engine::Kernel)
    }
}
