//! V4L2 capture (being written)
