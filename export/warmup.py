"""TF Serving warm-up requests: `assets.extra/tf_serving_warmup_requests`.

TensorFlow Serving replays the `PredictionLog` records of this TFRecord file when it loads a
version, before it serves it, so the first real request does not pay for graph
optimisation and memory allocation (see TF Serving's "SavedModel Warmup" guide). The records
written here are real requests: real images through each of the three signatures, at batch
sizes 1 and n.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf

from adt_tf.artifacts import serving_contract as names
from export.client import grpc_request

WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"


def encode_png(images: np.ndarray) -> list[bytes]:
    """Float images in [0, 1] [N, H, W, C] -> PNG files of their 8-bit rounding."""
    pixels = np.clip(np.rint(np.asarray(images, np.float32) * 255.0), 0, 255).astype(np.uint8)
    return [tf.io.encode_png(p).numpy() for p in pixels]


def warmup_records(model_name: str, images: np.ndarray) -> list:
    """`PredictionLog`s: serving_default at batch 1 and n, serving_bytes on PNG files of the
    images, predict at batch 1.

    Args:
        model_name: the served model's name.
        images: float32 [n, H, W, C] in [0, 1], real images of the model's shape.
    """
    from tensorflow_serving.apis import prediction_log_pb2

    images = np.asarray(images, np.float32)
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"warm-up images must be a non-empty batch [n, H, W, C], got shape "
                         f"{images.shape}.")
    requests = [
        grpc_request(model_name, images=images[:1]),
        grpc_request(model_name, images=images),
        grpc_request(model_name, image_bytes=encode_png(images)),
        grpc_request(model_name, images=images[:1], signature_name=names.PREDICT_SIGNATURE),
    ]
    return [prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=r)) for r in requests]


def write_warmup(saved_model_dir: str, records) -> str:
    """Writes the records to `<saved_model_dir>/assets.extra/tf_serving_warmup_requests`."""
    directory = os.path.join(saved_model_dir, WARMUP_DIR)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, WARMUP_FILE)
    with tf.io.TFRecordWriter(path) as writer:
        for record in records:
            writer.write(record.SerializeToString())
    return path


def read_warmup(path: str) -> list:
    """The `PredictionLog` records of a warm-up file (a `saved_model_dir` works too)."""
    from tensorflow_serving.apis import prediction_log_pb2

    if os.path.isdir(path):
        path = os.path.join(path, WARMUP_DIR, WARMUP_FILE)
    records = []
    for raw in tf.data.TFRecordDataset(path).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog()
        log.ParseFromString(raw)
        records.append(log)
    return records


__all__ = ["WARMUP_DIR", "WARMUP_FILE", "encode_png", "read_warmup",
           "warmup_records", "write_warmup"]
