"""Names shared by the exporter, the verification and the client (kept free of heavy imports,
so that the client can use them without loading Keras)."""

DEFAULT_SIGNATURE = "serving_default"
BYTES_SIGNATURE = "serving_bytes"
PREDICT_SIGNATURE = "predict"
SIGNATURES = (DEFAULT_SIGNATURE, BYTES_SIGNATURE, PREDICT_SIGNATURE)
IMAGES_INPUT = "images"
BYTES_INPUT = "image_bytes"
OUTPUTS = ("probabilities", "logits", "classes", "class_names")
"""Output names; `class_names` only when the classes have names."""
MODEL_CARD = "model_card.json"
MODELS_CONFIG = "models.config"
