"""The reference's numerics as Keras objects: losses (cross-entropy, KL, DLR, CW margin),
optimal transport (Feature Scattering's Sinkhorn), optimisers and their schedules (PyTorch's
SGD with coupled weight decay, the decoupled form, weight averaging with a warm-up),
initialisers (PyTorch's default layer initialisations). Imports `adt_tf.core` only."""
