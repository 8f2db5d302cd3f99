//! engine tests (pending)
