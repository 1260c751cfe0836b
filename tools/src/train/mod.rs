//! Trainers (being written).
