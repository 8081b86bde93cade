//! Reproducible images: the same inputs give the same image ID, run after run, daemon after
//! daemon.
//!
//! A Dockerfile build on Docker's daemons writes the build's own time into every layer (the
//! mtimes of files a `RUN` writes, and of the directories around them) and into the image
//! config (`created`, the history), so no two builds share an ID even when every file is the
//! same. slipway fixes the one time a build may write ([`sde`]: SOURCE_DATE_EPOCH) and, after
//! each build, rewrites the image into a normal form ([`normalize`]): the same filesystem and
//! config give the same bytes, hence the same ID. [`crate::verify`] checks it: two no-cache builds
//! (on one daemon or two) must give one ID; when they do not, it names the first layer and the
//! first file that differ, which points at the Dockerfile step to fix.

pub mod layer;
pub mod normalize;
pub mod partial;
pub mod sde;
pub mod stored;

pub use normalize::{normalize, normalize_image, Normalized};
pub use sde::Sde;
