//! Integration tests of saccade: one binary, one module per area.
