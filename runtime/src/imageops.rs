//! Image operations shared by the stages: resize, crop-and-resize into tensors, bilinear sampling (being written).
