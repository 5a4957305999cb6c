//! The DemoVLP trainer (feature `train`). Placeholder: being written.
