"""A small client for a classifier exported by `adt-export` and served by TensorFlow Serving.

Two transports, each split into a pure function that builds the request (testable without a
server) and one that sends it:

- REST (port 8501): `rest_url` + `rest_body` -> `rest_predict` (urllib, no extra dependency),
  `parse_rest_response` turns either response format into NumPy arrays.
- gRPC (port 8500): `grpc_request` (a `PredictRequest` of tensorflow-serving-api) ->
  `grpc_predict` (grpcio), returning NumPy arrays.

From the command line, to classify image files through the `serving_bytes` signature:

    python -m export.client --model_name=adt_cifar10 --protocol=rest cat.png ship.jpg

Reference: TF Serving's RESTful API and `tensorflow_serving/apis/prediction_service.proto`.
"""

from __future__ import annotations

import base64
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any

import numpy as np

from adt_tf.artifacts.serving_contract import (
    BYTES_INPUT,
    BYTES_SIGNATURE,
    DEFAULT_SIGNATURE,
    IMAGES_INPUT,
)

REST_PORT = 8501
GRPC_PORT = 8500


def _inputs(images, image_bytes) -> tuple[str, Any]:
    if (images is None) == (image_bytes is None):
        raise ValueError("Give exactly one of images (float32 [N, H, W, C] in [0, 1]) and "
                         "image_bytes (encoded PNG/JPEG files).")
    if images is not None:
        images = np.asarray(images, np.float32)
        if images.ndim != 4:
            raise ValueError(f"images must have shape [N, H, W, C], got {images.shape}.")
        return IMAGES_INPUT, images
    image_bytes = list(image_bytes)
    if not all(isinstance(b, bytes) for b in image_bytes):
        raise ValueError("image_bytes must be a sequence of bytes objects (file contents).")
    return BYTES_INPUT, image_bytes


def _default_signature(images) -> str:
    return DEFAULT_SIGNATURE if images is not None else BYTES_SIGNATURE


# -- REST -------------------------------------------------------------------------------


def rest_url(model_name: str, host: str = "localhost", port: int = REST_PORT,
             version: int | None = None, scheme: str = "http") -> str:
    """`http://host:port/v1/models/NAME[/versions/V]:predict`."""
    if not model_name or "/" in model_name:
        raise ValueError(f"model_name must be a non-empty name without '/', got {model_name!r}.")
    path = f"/v1/models/{model_name}"
    if version is not None:
        path += f"/versions/{int(version)}"
    return f"{scheme}://{host}:{int(port)}{path}:predict"


def rest_body(images=None, image_bytes: Sequence[bytes] | None = None,
              signature_name: str | None = None, columnar: bool = False) -> dict[str, Any]:
    """The JSON body of a REST `:predict` request.

    Args:
        images: float32 [N, H, W, C] in [0, 1] (for `serving_default` or `predict`).
        image_bytes: encoded image files (for `serving_bytes`), sent base64-encoded as
            `{"b64": ...}`, the REST API's encoding of binary strings.
        signature_name: defaults to `serving_default` for images, `serving_bytes` for bytes.
        columnar: the "inputs" (columnar) format instead of "instances" (row format).

    Returns:
        Row format: `{"signature_name": s, "instances": [{"images": image_0}, ...]}`;
        columnar: `{"signature_name": s, "inputs": {"images": [image_0, ...]}}`.
    """
    name, value = _inputs(images, image_bytes)
    if name == IMAGES_INPUT:
        values = value.tolist()
    else:
        values = [{"b64": base64.b64encode(b).decode("ascii")} for b in value]
    body: dict[str, Any] = {"signature_name": signature_name or _default_signature(images)}
    if columnar:
        body["inputs"] = {name: values}
    else:
        body["instances"] = [{name: v} for v in values]
    return body


def parse_rest_response(response: dict[str, Any]) -> dict[str, np.ndarray]:
    """A REST response (row "predictions" or columnar "outputs") -> {output name: array}."""
    if "error" in response:
        raise RuntimeError(f"TF Serving answered with an error: {response['error']}")
    if "outputs" in response:
        outputs = response["outputs"]
        return ({k: np.asarray(v) for k, v in outputs.items()} if isinstance(outputs, dict)
                else {"outputs": np.asarray(outputs)})
    if "predictions" not in response:
        raise ValueError(f"Not a predict response (no 'predictions' nor 'outputs'): "
                         f"{sorted(response)}.")
    rows = response["predictions"]
    if rows and isinstance(rows[0], dict):
        return {k: np.asarray([row[k] for row in rows]) for k in rows[0]}
    return {"predictions": np.asarray(rows)}


def rest_predict(url: str, body: dict[str, Any], timeout: float = 30.0) -> dict[str, np.ndarray]:
    """POSTs a body to a `:predict` URL; the outputs as NumPy arrays.

    Raises RuntimeError with the server's message for an HTTP error (e.g. 400 for images
    outside [0, 1]) and for an unreachable server.
    """
    request = urllib.request.Request(url, data=json.dumps(body).encode("utf-8"),
                                     headers={"Content-Type": "application/json"},
                                     method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            text = reply.read().decode("utf-8", "replace")
        try:
            answer = json.loads(text)
        except json.JSONDecodeError:
            raise RuntimeError(f"{url} answered with something that is not JSON (is it TF "
                               f"Serving's REST API?): {text[:200]!r}") from None
        if not isinstance(answer, dict):
            raise RuntimeError(f"{url} answered {type(answer).__name__} JSON, not a predict "  # noqa: TRY004
                               "response.")
        return parse_rest_response(answer)
    except urllib.error.HTTPError as err:
        detail = err.read().decode("utf-8", "replace")
        raise RuntimeError(f"{url} answered HTTP {err.code}: {detail}") from err
    except urllib.error.URLError as err:
        raise RuntimeError(f"Could not reach {url}: {err.reason}") from err
    except OSError as err:  # a timeout or a dropped connection while waiting for the answer
        raise RuntimeError(f"No answer from {url} ({type(err).__name__}: {err}).") from err


# -- gRPC -------------------------------------------------------------------------------


def grpc_request(model_name: str, images=None, image_bytes: Sequence[bytes] | None = None,
                 signature_name: str | None = None, version: int | None = None):
    """A `PredictRequest`: model_spec (name, signature_name, version) and the inputs map
    {input name: TensorProto}."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    if not model_name:
        raise ValueError("model_name must be a non-empty string.")
    name, value = _inputs(images, image_bytes)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = signature_name or _default_signature(images)
    if version is not None:
        request.model_spec.version.value = int(version)
    tensor = value if name == IMAGES_INPUT else np.array(value, dtype=object)
    request.inputs[name].CopyFrom(tf.make_tensor_proto(tensor))
    return request


def grpc_predict(request, target: str = f"localhost:{GRPC_PORT}",
                 timeout: float = 30.0) -> dict[str, np.ndarray]:
    """Sends a PredictRequest to `host:port`; the outputs as NumPy arrays (strings as bytes)."""
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    with grpc.insecure_channel(target) as channel:
        stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
        try:
            response = stub.Predict(request, timeout=timeout)
        except grpc.RpcError as err:
            raise RuntimeError(f"{target} answered {err.code().name}: {err.details()}") from err
    return {k: tf.make_ndarray(v) for k, v in response.outputs.items()}


# -- command line -----------------------------------------------------------------------


def main(argv):
    """Classifies image files through a running TF Serving. Exit 2 with one line naming the
    file or the server at fault (no server listening, an unreadable image, an error answer)."""
    from absl import flags

    flags_ = flags.FLAGS
    paths = argv[1:]
    if not paths:
        print("usage: python -m export.client --model_name=NAME IMAGE [IMAGE ...]",
              file=sys.stderr)
        sys.exit(2)
    try:
        files = []
        for path in paths:
            with open(path, "rb") as f:
                files.append(f.read())
        if flags_.protocol == "rest":
            url = rest_url(flags_.model_name, flags_.host, flags_.rest_port, flags_.version)
            outputs = rest_predict(url, rest_body(image_bytes=files))
        else:
            request = grpc_request(flags_.model_name, image_bytes=files, version=flags_.version)
            outputs = grpc_predict(request, f"{flags_.host}:{flags_.grpc_port}")
    except (RuntimeError, OSError, ValueError) as err:
        print(f"export.client: error: {err}", file=sys.stderr)
        sys.exit(2)
    missing = [k for k in ("classes", "probabilities") if k not in outputs]
    if missing:
        where = (url if flags_.protocol == "rest" else f"{flags_.host}:{flags_.grpc_port}")
        print(f"export.client: error: the model {flags_.model_name!r} at {where} answered "
              f"without {' and '.join(missing)} (outputs: {', '.join(sorted(outputs))}): it is "
              "not an adt-export export.", file=sys.stderr)
        sys.exit(2)
    names = outputs.get("class_names")
    for i, path in enumerate(paths):
        label = int(outputs["classes"][i])
        name = names[i].decode() if names is not None and isinstance(names[i], bytes) else (
            None if names is None else str(names[i]))
        prob = float(outputs["probabilities"][i][label])
        print(f"{path}: class {label}{f' ({name})' if name else ''}, probability {prob:.4f}")


def run():
    from absl import app, flags

    flags.DEFINE_string("model_name", None, "Name of the served model.", required=True)
    flags.DEFINE_enum("protocol", "rest", ["rest", "grpc"], "Transport.")
    flags.DEFINE_string("host", "localhost", "TF Serving host.")
    flags.DEFINE_integer("rest_port", REST_PORT, "TF Serving REST port.")
    flags.DEFINE_integer("grpc_port", GRPC_PORT, "TF Serving gRPC port.")
    flags.DEFINE_integer("version", None, "Model version (default: the server's latest).")
    app.run(main)


if __name__ == "__main__":
    run()
