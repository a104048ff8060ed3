//! Housekeeping on the daemon under the path front ends use: listing and removing
//! isol8's containers and images, reaping orphans, the built image that covers a
//! request's packages, and `isol8 doctor`'s Docker checks. The code lives with the rest
//! of the Docker engine, in `docker::housekeeping`; every function takes a
//! [`ContainerApi`](crate::docker::ContainerApi), which the Docker client is.

pub use crate::docker::doctor;
pub use crate::docker::housekeeping::{
    cleanup, covering_image, custom_images, daemon_checks, hostname, list_containers, list_images,
    package_key, reap_orphans, remove_container, Check, CleanupOptions, CleanupReport,
    CustomImageInfo, ManagedContainer,
};
