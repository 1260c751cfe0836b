//! The class list: the 43 GTSRB classes (ids 0..=42, GTSRB's own numbering) plus background (43).

/// Sign classes of GTSRB.
pub const NUM_SIGN_CLASSES: usize = 43;
/// Index of the background class in classifier outputs.
pub const BACKGROUND_CLASS: usize = 43;
/// Outputs of every classifier head: the sign classes plus background.
pub const NUM_CLASSES: usize = 44;

/// GTSRB class names, indexed by class id.
pub const GTSRB_CLASS_NAMES: [&str; NUM_SIGN_CLASSES] = [
    "speed limit 20",
    "speed limit 30",
    "speed limit 50",
    "speed limit 60",
    "speed limit 70",
    "speed limit 80",
    "end of speed limit 80",
    "speed limit 100",
    "speed limit 120",
    "no passing",
    "no passing for vehicles over 3.5 t",
    "right-of-way at the next intersection",
    "priority road",
    "yield",
    "stop",
    "no vehicles",
    "vehicles over 3.5 t prohibited",
    "no entry",
    "general caution",
    "dangerous curve to the left",
    "dangerous curve to the right",
    "double curve",
    "bumpy road",
    "slippery road",
    "road narrows on the right",
    "road work",
    "traffic signals",
    "pedestrians",
    "children crossing",
    "bicycles crossing",
    "beware of ice or snow",
    "wild animals crossing",
    "end of all speed and passing limits",
    "turn right ahead",
    "turn left ahead",
    "ahead only",
    "go straight or right",
    "go straight or left",
    "keep right",
    "keep left",
    "roundabout mandatory",
    "end of no passing",
    "end of no passing for vehicles over 3.5 t",
];

/// Human name of a class id, `"background"` for [`BACKGROUND_CLASS`], `"unknown"` past it.
pub fn class_name(class_id: usize) -> &'static str {
    match GTSRB_CLASS_NAMES.get(class_id) {
        Some(name) => name,
        None if class_id == BACKGROUND_CLASS => "background",
        None => "unknown",
    }
}
