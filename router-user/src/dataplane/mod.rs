//! The data path from userspace: loading and attaching the XDP object (`loader`), planning map
//! contents from desired listeners (`plan`, pure) and writing them (`writer`).
pub mod host;
pub mod loader;
pub mod plan;
pub mod sweep;
pub mod writer;

pub use loader::{AttachMode, Datapath, LoadOptions};
pub use plan::{Applied, MapDelta, plan};
pub use writer::Maps;
