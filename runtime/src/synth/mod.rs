//! Synthetic traffic scenes (being written).
