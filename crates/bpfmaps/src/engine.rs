//! Opening, listing and creating maps on either engine.
//!
//! A [`MapSelector`] (bpftool's `id N | pinned PATH | name NAME`) names a map; [`Map::open`] finds
//! which engine holds it. A pinned path tells the engine by itself: a path on bpffs is a kernel
//! pin, anything else a user-engine pin. Ids and names are looked up on both engines; when both
//! have a match the choice is ambiguous and the caller must say which engine it means.

use std::fmt;
use std::path::{Path, PathBuf};

use bpfmaps_abi::{MapDef, MapInfo, MapOps};
use bpfmaps_kernel::map::KernelMap;
use bpfmaps_maps::{Access, UserMap};

/// Which engine holds a map.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Engine {
    /// The Linux kernel.
    Kernel,
    /// bpfmaps' user-space engine (shared memory).
    User,
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Engine::Kernel => "kernel",
            Engine::User => "user",
        })
    }
}

/// Which engines a lookup may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EngineChoice {
    /// Whichever engine has the map (an error if both do).
    Any,
    /// Only this engine.
    Only(Engine),
}

impl EngineChoice {
    fn allows(self, engine: Engine) -> bool {
        match self {
            EngineChoice::Any => true,
            EngineChoice::Only(e) => e == engine,
        }
    }
}

/// bpftool's way of naming a map.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MapSelector {
    /// `id N`.
    Id(u32),
    /// `pinned PATH`.
    Pinned(PathBuf),
    /// `name NAME`.
    Name(String),
}

impl fmt::Display for MapSelector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MapSelector::Id(id) => write!(f, "id {id}"),
            MapSelector::Pinned(p) => write!(f, "pinned {}", p.display()),
            MapSelector::Name(n) => write!(f, "name {n}"),
        }
    }
}

/// Why a map could not be opened, listed or created.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel engine failed.
    #[error("kernel engine: {0}")]
    Kernel(#[from] bpfmaps_kernel::Error),
    /// The user engine failed.
    #[error("user engine: {0}")]
    User(#[from] bpfmaps_maps::UserMapError),
    /// No engine has a map matching the selector.
    #[error("no map with {0}")]
    NotFound(MapSelector),
    /// Both engines have a map matching the selector.
    #[error("{0} matches a kernel map and a user-engine map: say which with --engine kernel|user")]
    Ambiguous(MapSelector),
    /// The selector names a map on an engine the caller excluded.
    #[error("{selector} is a {engine}-engine map, but only the other engine was allowed")]
    WrongEngine {
        /// What was asked for.
        selector: MapSelector,
        /// Where it is.
        engine: Engine,
    },
}

enum Handle {
    Kernel(KernelMap),
    User(UserMap),
}

/// An open map on either engine.
pub struct Map {
    handle: Handle,
}

impl Map {
    /// Opens the map `sel` names, on the engines `choice` allows.
    pub fn open(sel: &MapSelector, choice: EngineChoice) -> Result<Map, Error> {
        match sel {
            MapSelector::Pinned(path) => {
                let engine = if bpfmaps_kernel::fs::is_on_bpffs(path) {
                    Engine::Kernel
                } else {
                    Engine::User
                };
                if !choice.allows(engine) {
                    return Err(Error::WrongEngine {
                        selector: sel.clone(),
                        engine,
                    });
                }
                Ok(match engine {
                    Engine::Kernel => Map::kernel(KernelMap::from_pinned(path)?),
                    Engine::User => Map::user(UserMap::open_pinned(path, Access::ReadWrite)?),
                })
            }
            MapSelector::Id(id) => {
                let kernel = if choice.allows(Engine::Kernel) {
                    KernelMap::from_id(*id).ok()
                } else {
                    None
                };
                let user = if choice.allows(Engine::User) {
                    UserMap::from_id(*id).ok()
                } else {
                    None
                };
                Self::pick(sel, kernel, user)
            }
            MapSelector::Name(name) => {
                let kernel = if choice.allows(Engine::Kernel) {
                    KernelMap::from_name(name).ok()
                } else {
                    None
                };
                let user = if choice.allows(Engine::User) {
                    bpfmaps_maps::Store::default_root()
                        .ok()
                        .and_then(|store| bpfmaps_maps::find_by_name_in(&store, name).ok())
                        .and_then(|found| found.first().map(|m| m.info.id))
                        .and_then(|id| UserMap::from_id(id).ok())
                } else {
                    None
                };
                Self::pick(sel, kernel, user)
            }
        }
    }

    fn pick(
        sel: &MapSelector,
        kernel: Option<KernelMap>,
        user: Option<UserMap>,
    ) -> Result<Map, Error> {
        match (kernel, user) {
            (Some(_), Some(_)) => Err(Error::Ambiguous(sel.clone())),
            (Some(k), None) => Ok(Map::kernel(k)),
            (None, Some(u)) => Ok(Map::user(u)),
            (None, None) => Err(Error::NotFound(sel.clone())),
        }
    }

    /// Wraps a kernel-engine map.
    pub fn kernel(map: KernelMap) -> Map {
        Map {
            handle: Handle::Kernel(map),
        }
    }

    /// Wraps a user-engine map.
    pub fn user(map: UserMap) -> Map {
        Map {
            handle: Handle::User(map),
        }
    }

    /// The engine that holds the map.
    pub fn engine(&self) -> Engine {
        match self.handle {
            Handle::Kernel(_) => Engine::Kernel,
            Handle::User(_) => Engine::User,
        }
    }

    /// The byte-level operations.
    pub fn ops(&self) -> &dyn MapOps {
        match &self.handle {
            Handle::Kernel(m) => m,
            Handle::User(m) => m,
        }
    }

    /// What the map is.
    pub fn info(&self) -> MapInfo {
        self.ops().info()
    }

    /// The kernel map, when the kernel engine holds it.
    pub fn as_kernel(&self) -> Option<&KernelMap> {
        match &self.handle {
            Handle::Kernel(m) => Some(m),
            Handle::User(_) => None,
        }
    }

    /// The user-engine map, when the user engine holds it.
    pub fn as_user(&self) -> Option<&UserMap> {
        match &self.handle {
            Handle::User(m) => Some(m),
            Handle::Kernel(_) => None,
        }
    }

    /// Pins the map at `path`: on bpffs for a kernel map, as a user-engine pin file otherwise.
    pub fn pin(&self, path: &Path) -> Result<(), Error> {
        match &self.handle {
            Handle::Kernel(m) => {
                bpfmaps_kernel::fs::ensure_bpffs()?;
                m.pin(path)?;
            }
            Handle::User(m) => m.pin(path)?,
        }
        Ok(())
    }
}

/// Every map of the engines `choice` allows, kernel maps first, each in id order.
pub fn list_maps(choice: EngineChoice) -> Result<Vec<(Engine, MapInfo)>, Error> {
    let mut out = Vec::new();
    if choice.allows(Engine::Kernel) {
        out.extend(
            bpfmaps_kernel::map::list_maps()?
                .into_iter()
                .map(|i| (Engine::Kernel, i)),
        );
    }
    if choice.allows(Engine::User) {
        out.extend(
            bpfmaps_maps::list()?
                .into_iter()
                .map(|m| (Engine::User, m.info)),
        );
    }
    Ok(out)
}

/// Creates a map from `def` and pins it at `path`. The engine is the one `choice` names, or, for
/// [`EngineChoice::Any`], the kernel when `path` is on bpffs and the user engine otherwise.
pub fn create_pinned_map(path: &Path, def: &MapDef, choice: EngineChoice) -> Result<Map, Error> {
    let engine = match choice {
        EngineChoice::Only(e) => e,
        EngineChoice::Any => {
            let dir = path.parent().unwrap_or(Path::new("."));
            if bpfmaps_kernel::fs::is_on_bpffs(dir) {
                Engine::Kernel
            } else {
                Engine::User
            }
        }
    };
    let map = match engine {
        Engine::Kernel => Map::kernel(KernelMap::create(def)?),
        Engine::User => Map::user(UserMap::create(def)?),
    };
    map.pin(path)?;
    Ok(map)
}
