//! The data path from userspace: loading and attaching the XDP object (`loader`), planning map
//! contents from desired listeners (`plan`, pure) and writing them (`writer`); the flow garbage
//! collector (`gc`: pure core and executor) over batch map operations (`batch`).
pub mod batch;
pub mod gc;
pub mod host;
pub mod loader;
pub mod plan;
pub mod sweep;
pub mod writer;

pub use loader::{Datapath, LoadOptions};
pub use plan::{Applied, MapDelta, plan};
pub use writer::Maps;
