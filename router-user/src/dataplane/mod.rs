//! The data path from userspace: loading/attaching the XDP object, planning and writing maps.
