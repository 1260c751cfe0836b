//! How a strategy turns probabilities into detections: [`DetectConfig`], the settings every strategy shares
//! (score floor, frame-level early exit, merging, patch sizing, second look).

/// Settings every strategy shares for turning probabilities into detections.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DetectConfig {
    /// A patch becomes a detection when its best sign class beats background and reaches this probability.
    pub min_score: f32,
    /// Frame-level early exit: when the glance's best objectness is below this, no patch is examined.
    pub nothing_threshold: f32,
    /// Detections overlapping more than this (IoU) are merged, keeping the more confident.
    pub merge_iou: f32,
    /// Patch side = estimated sign side × this, so the classifier sees the sign with some surround (GTSRB
    /// crops have a ~10 % margin on each side).
    pub context: f32,
    /// Smallest patch side in frame px (the glance underestimates tiny signs).
    pub min_patch_side_px: f32,
    /// Centre patches at the objectness-weighted centroid around a cell rather than at the cell's centre.
    pub refine_centre: bool,
    /// Second look (patch nets with a box head): a patch that may hold a sign is cut again around the box
    /// the net found in it, framed as the net was trained, and classified again; its verdict and box are
    /// the ones reported.
    pub second_look: bool,
    /// Side of the second-look patch over the side of the box found in the first (the larger of its
    /// width and height).
    pub second_look_context: f32,
    /// A first patch gets a second look when its probability of holding any sign (1 − background) reaches
    /// this.
    pub second_look_min: f32,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            min_score: 0.5,
            nothing_threshold: 0.1,
            merge_iou: 0.3,
            context: 1.25,
            min_patch_side_px: 24.0,
            refine_centre: true,
            second_look: true,
            second_look_context: 1.3,
            second_look_min: 0.1,
        }
    }
}
