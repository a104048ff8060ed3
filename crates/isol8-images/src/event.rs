//! [`SetupEvent`]: what an image build reports while it runs.

/// Progress of an image build (`isol8 setup`, `isol8 build`), for the CLI to show.
#[derive(Debug, Clone, PartialEq)]
pub enum SetupEvent {
    /// A step begins.
    Step {
        /// Runtime concerned, if any.
        runtime: Option<String>,
        /// What is happening.
        message: String,
    },
    /// A line of output from a long-running step (Docker build, pull, debootstrap,
    /// download), so progress is never silent.
    Output {
        /// The line, without its newline.
        line: String,
    },
    /// An image (a runtime image or the base) was built.
    Built {
        /// Image reference.
        image: String,
        /// Build time.
        seconds: f64,
    },
    /// An image was already current.
    UpToDate {
        /// Image reference.
        image: String,
    },
}
