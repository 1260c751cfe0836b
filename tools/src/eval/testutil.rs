//! Test helpers: random-init models saved the way the shipped weights are.

use std::path::Path;

use candle_core::Device;
use saccade_models::patchnet::PatchNet;

use crate::engine::ModelArgs;

/// Random-init models saved as `glancenet`/`patchnet` `.safetensors` and `.q8_0.gguf` in `dir`, for tests
/// that need real nets but not trained ones.
#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) fn write_random_models(dir: &Path) -> ModelArgs {
    use candle_nn::{VarBuilder, VarMap};
    use saccade_models::{GlanceNetConfig, GlanceNetModel, PatchNetConfig, QuantDtype};
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, candle_core::DType::F32, &device);
    let glance = GlanceNetModel::new(&GlanceNetConfig::default(), vb.pp("g")).unwrap();
    let patch = PatchNet::new(&PatchNetConfig::default(), vb.pp("p")).unwrap();
    glance
        .save_safetensors(&dir.join("glancenet.safetensors"))
        .unwrap();
    patch
        .save_safetensors(&dir.join("patchnet.safetensors"))
        .unwrap();
    for stem in ["glancenet", "patchnet"] {
        saccade_models::quantize_file(
            &dir.join(format!("{stem}.safetensors")),
            &dir.join(format!("{stem}.q8_0.gguf")),
            QuantDtype::Q8_0,
        )
        .unwrap();
    }
    ModelArgs {
        weights_dir: Some(dir.to_path_buf()),
        glance_weights: None,
        classifier_weights: None,
        dtype: saccade_models::QuantDtype::Q8_0,
    }
}
