//! Focus strategies: where to look in the full-resolution frame and when to stop.
