//! Opening, listing and creating maps on either engine.
//!
//! A [`MapSelector`] (bpftool's `id N | pinned PATH | name NAME`) names a map; [`Map::open`] finds
//! which engine holds it. A pinned path tells the engine by itself: a path on bpffs is a kernel
//! pin, anything else a user-engine pin. Ids and names are looked up on both engines; when both
//! have a match the choice is ambiguous and the caller must say which engine it means.

use std::fmt;
use std::path::{Path, PathBuf};

use bpfmaps_abi::{Errno, MapDef, MapInfo, MapOps};
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
    /// Several maps have the name asked for (bpftool refuses the same way).
    #[error("several maps match this handle: {count} maps are named {name:?} ({ids}); use `id N`")]
    SeveralMatch {
        /// The name.
        name: String,
        /// How many maps have it.
        count: usize,
        /// Their engines and ids, as `kernel id 4, user id 2`.
        ids: String,
    },
    /// A kernel map can only be pinned on a bpf file system.
    #[error(
        "{}: not on a bpf file system: kernel maps are pinned on bpffs (mounted at /sys/fs/bpf; \
         `mount -t bpf bpf DIR` makes another), or use --engine user for a user-engine pin",
        .0.display()
    )]
    NotOnBpffs(PathBuf),
    /// A pin name with a dot, which bpffs reserves (the kernel refuses it with `EPERM`, and the
    /// user engine does the same).
    #[error(
        "{}: EPERM (Operation not permitted): a pin name may not contain a dot \
         (bpffs reserves dotted names)",
        .0.display()
    )]
    DottedPinName(PathBuf),
    /// The selector names a map on an engine the caller excluded.
    #[error("{selector} is a {engine}-engine map, but only the other engine was allowed")]
    WrongEngine {
        /// What was asked for.
        selector: MapSelector,
        /// Where it is.
        engine: Engine,
    },
}

/// What one engine answered to a lookup by id or name.
enum Found<M> {
    /// The map.
    Yes(M),
    /// No such map on this engine.
    No,
    /// The engine could not answer (permission, a corrupt file...).
    Failed(Error),
}

impl Found<KernelMap> {
    fn from_kernel(result: Result<KernelMap, bpfmaps_kernel::Error>) -> Self {
        match result {
            Ok(map) => Found::Yes(map),
            Err(bpfmaps_kernel::Error::Sys(e)) if e.errno == Errno::ENOENT => Found::No,
            Err(bpfmaps_kernel::Error::NoSuchName(_)) => Found::No,
            Err(e) => Found::Failed(e.into()),
        }
    }
}

impl Found<UserMap> {
    fn from_user(result: Result<UserMap, bpfmaps_maps::UserMapError>) -> Self {
        match result {
            Ok(map) => Found::Yes(map),
            Err(e) if e.errno() == Some(Errno::ENOENT) => Found::No,
            Err(e) => Found::Failed(e.into()),
        }
    }
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
                    Found::from_kernel(KernelMap::from_id(*id))
                } else {
                    Found::No
                };
                let user = if choice.allows(Engine::User) {
                    Found::from_user(UserMap::from_id(*id))
                } else {
                    Found::No
                };
                Self::pick(sel, kernel, user)
            }
            MapSelector::Name(name) => Self::open_by_name(sel, name, choice),
        }
    }

    /// `name NAME`: exactly one map of the allowed engines must have the name.
    fn open_by_name(sel: &MapSelector, name: &str, choice: EngineChoice) -> Result<Map, Error> {
        let (kernel_ids, kernel_failed) = if choice.allows(Engine::Kernel) {
            match bpfmaps_kernel::map::find_map_ids_by_name(name) {
                Ok(ids) => (ids, None),
                Err(e) => (Vec::new(), Some(e)),
            }
        } else {
            (Vec::new(), None)
        };
        let user_ids: Vec<u32> = if choice.allows(Engine::User) {
            let store =
                bpfmaps_maps::Store::default_root().map_err(bpfmaps_maps::UserMapError::from)?;
            bpfmaps_maps::find_by_name_in(&store, name)?
                .iter()
                .map(|m| m.info.id)
                .collect()
        } else {
            Vec::new()
        };
        if kernel_ids.len() + user_ids.len() > 1 && !(kernel_ids.len() == 1 && user_ids.len() == 1)
        {
            let ids = kernel_ids
                .iter()
                .map(|id| format!("kernel id {id}"))
                .chain(user_ids.iter().map(|id| format!("user id {id}")))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::SeveralMatch {
                name: name.to_owned(),
                count: kernel_ids.len() + user_ids.len(),
                ids,
            });
        }
        let kernel = match (kernel_ids.first(), kernel_failed) {
            (Some(id), _) => Found::from_kernel(KernelMap::from_id(*id)),
            (None, Some(e)) => Found::Failed(e.into()),
            (None, None) => Found::No,
        };
        let user = match user_ids.first() {
            Some(id) => Found::from_user(UserMap::from_id(*id)),
            None => Found::No,
        };
        Self::pick(sel, kernel, user)
    }

    /// One map from what each engine answered: a map on both is ambiguous; with none, an
    /// engine's failure (other than "no such map") is the reason, so a permission problem is
    /// not reported as a missing map.
    fn pick(
        sel: &MapSelector,
        kernel: Found<KernelMap>,
        user: Found<UserMap>,
    ) -> Result<Map, Error> {
        match (kernel, user) {
            (Found::Yes(_), Found::Yes(_)) => Err(Error::Ambiguous(sel.clone())),
            (Found::Yes(k), _) => Ok(Map::kernel(k)),
            (_, Found::Yes(u)) => Ok(Map::user(u)),
            (_, Found::Failed(e)) | (Found::Failed(e), _) => Err(e),
            (Found::No, Found::No) => Err(Error::NotFound(sel.clone())),
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
        if path
            .file_name()
            .is_some_and(|n| n.as_encoded_bytes().contains(&b'.'))
        {
            return Err(Error::DottedPinName(path.to_owned()));
        }
        match &self.handle {
            Handle::Kernel(m) => {
                bpfmaps_kernel::fs::ensure_bpffs()?;
                let dir = match path.parent() {
                    Some(p) if !p.as_os_str().is_empty() => p,
                    _ => Path::new("."),
                };
                if !bpfmaps_kernel::fs::is_on_bpffs(dir) {
                    return Err(Error::NotOnBpffs(path.to_owned()));
                }
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

/// The maps [`list_maps_available`] could list, and why the kernel's are missing when they are.
#[derive(Debug)]
pub struct Listing {
    /// Every map listed, kernel maps first, each engine in id order.
    pub maps: Vec<(Engine, MapInfo)>,
    /// Why the kernel's maps are not in `maps` (listing them needs CAP_SYS_ADMIN), when the
    /// kernel refused with `EPERM`.
    pub kernel_refused: Option<Error>,
}

/// Every map of the engines `choice` allows, like [`list_maps`], except that when the kernel
/// refuses to list its maps with `EPERM` (an unprivileged user) and the user engine is allowed
/// too, the user engine's maps are still listed and the refusal is returned beside them.
pub fn list_maps_available(choice: EngineChoice) -> Result<Listing, Error> {
    let mut maps = Vec::new();
    let mut kernel_refused = None;
    if choice.allows(Engine::Kernel) {
        match bpfmaps_kernel::map::list_maps() {
            Ok(list) => maps.extend(list.into_iter().map(|i| (Engine::Kernel, i))),
            Err(bpfmaps_kernel::Error::Sys(e))
                if e.errno == Errno::EPERM && choice == EngineChoice::Any =>
            {
                kernel_refused = Some(bpfmaps_kernel::Error::Sys(e).into());
            }
            Err(e) => return Err(e.into()),
        }
    }
    if choice.allows(Engine::User) {
        maps.extend(
            bpfmaps_maps::list()?
                .into_iter()
                .map(|m| (Engine::User, m.info)),
        );
    }
    Ok(Listing {
        maps,
        kernel_refused,
    })
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
