//! Image archives: the formats an image travels in between the daemon, slipway and the nodes.
//!
//! One home for each: [`save`] reads and writes `docker save` archives (normalising exports and
//! loads them; a load streams one from files on disk), [`oci`] writes the OCI image layout
//! containerd imports (with the manifest containerd itself would write), and [`blocks`] holds
//! the tar pieces for archives written or read one block at a time; [`gzip`] compresses a layer
//! the same way every time (the blobs slipway pushes). Normalising, loading and
//! `verify` all use these; none writes an archive format of its own.

pub mod blocks;
pub mod gzip;
pub mod oci;
pub mod save;

pub use save::ImageFiles;
