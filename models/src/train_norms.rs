//! The batch normalisation a net carries while training ([`TrainNorms`]): one per convolution, folded into
//! the convolutions for inference and saving. Without the `train` feature it is empty and never on, so a
//! net's struct and its inference path read the same with and without the feature.

#[cfg(feature = "train")]
use crate::train_ops::BatchNorm;
#[cfg(feature = "train")]
use std::sync::Arc;

/// The batch normalisation of a net's `N` convolutions, when it was built for training.
#[derive(Debug, Clone, Default)]
pub(crate) struct TrainNorms<const N: usize> {
    #[cfg(feature = "train")]
    norms: Option<Arc<[BatchNorm; N]>>,
}

impl<const N: usize> TrainNorms<N> {
    /// Whether batch normalisation is on (a net built for training); never without the `train` feature.
    pub(crate) fn is_on(&self) -> bool {
        #[cfg(feature = "train")]
        let on = self.norms.is_some();
        #[cfg(not(feature = "train"))]
        let on = false;
        on
    }
}

#[cfg(feature = "train")]
impl<const N: usize> TrainNorms<N> {
    /// Normalisation after each of the `N` convolutions.
    pub(crate) fn new(norms: [BatchNorm; N]) -> Self {
        Self {
            norms: Some(Arc::new(norms)),
        }
    }

    /// The normalisations, when on.
    pub(crate) fn get(&self) -> Option<&[BatchNorm; N]> {
        self.norms.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::TrainNorms;

    #[test]
    fn a_default_net_is_not_training() {
        assert!(!TrainNorms::<3>::default().is_on());
    }
}
