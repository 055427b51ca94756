"""The serving client: request bodies in TF Serving's documented formats (REST and gRPC),
response parsing, and the send functions against in-process stand-ins of the two APIs
(no TF Serving binary can be installed here), backed by a real exported model."""

import base64
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import tensorflow as tf

from export import client
from export.exporter import export_classifier
from export.warmup import encode_png
from tests.export.helpers import grpc_stand_in, rest_stand_in
from tests.helpers import make_tiny_images, run_command, slow_cases, tiny_classifier

IMAGES = np.random.default_rng(0).uniform(0, 1, (2, 4, 4, 3)).astype(np.float32)


def test_rest_url():
    assert client.rest_url("adt") == "http://localhost:8501/v1/models/adt:predict"
    assert client.rest_url("adt", "serving.example", 9000, version=3) == (
        "http://serving.example:9000/v1/models/adt/versions/3:predict")
    with pytest.raises(ValueError, match="model_name"):
        client.rest_url("a/b")


def test_rest_body_row_and_columnar_formats():
    body = client.rest_body(images=IMAGES)
    assert set(body) == {"signature_name", "instances"}
    assert body["signature_name"] == "serving_default"
    assert len(body["instances"]) == 2 and set(body["instances"][0]) == {"images"}
    np.testing.assert_allclose(np.array([i["images"] for i in body["instances"]]), IMAGES)
    assert json.loads(json.dumps(body)) == body  # plain JSON

    columnar = client.rest_body(images=IMAGES, signature_name="predict", columnar=True)
    assert set(columnar) == {"signature_name", "inputs"}
    assert columnar["signature_name"] == "predict"
    np.testing.assert_allclose(np.array(columnar["inputs"]["images"]), IMAGES)

    files = [b"\x89PNG fake", b"\xff\xd8 jpeg"]
    body = client.rest_body(image_bytes=files)
    assert body["signature_name"] == "serving_bytes"
    assert body["instances"] == [{"image_bytes": {"b64": base64.b64encode(f).decode()}}
                                 for f in files]
    assert client.rest_body(image_bytes=files, columnar=True)["inputs"] == {
        "image_bytes": [{"b64": base64.b64encode(f).decode()} for f in files]}


def test_request_builders_reject_bad_arguments():
    with pytest.raises(ValueError, match="exactly one of images"):
        client.rest_body()
    with pytest.raises(ValueError, match="exactly one of images"):
        client.grpc_request("m", images=IMAGES, image_bytes=[b"x"])
    with pytest.raises(ValueError, match=r"\[N, H, W, C\], got \(4, 4, 3\)"):
        client.rest_body(images=IMAGES[0])
    with pytest.raises(ValueError, match="bytes objects"):
        client.rest_body(image_bytes=["not bytes"])


def test_parse_rest_response_both_formats():
    row = {"predictions": [{"classes": 3, "probabilities": [0.1, 0.9], "class_names": "cat"},
                           {"classes": 1, "probabilities": [0.8, 0.2], "class_names": "car"}]}
    parsed = client.parse_rest_response(row)
    np.testing.assert_array_equal(parsed["classes"], [3, 1])
    assert parsed["probabilities"].shape == (2, 2) and list(parsed["class_names"]) == [
        "cat", "car"]
    columnar = client.parse_rest_response({"outputs": {"classes": [3, 1]}})
    np.testing.assert_array_equal(columnar["classes"], [3, 1])
    with pytest.raises(RuntimeError, match="answered with an error: bad"):
        client.parse_rest_response({"error": "bad"})


def test_grpc_request_fields():
    from tensorflow_serving.apis import predict_pb2

    request = client.grpc_request("adt", images=IMAGES, version=4)
    assert isinstance(request, predict_pb2.PredictRequest)
    assert request.model_spec.name == "adt"
    assert request.model_spec.signature_name == "serving_default"
    assert request.model_spec.version.value == 4
    assert list(request.inputs) == ["images"]
    tensor = request.inputs["images"]
    assert tensor.dtype == tf.float32.as_datatype_enum
    assert [d.size for d in tensor.tensor_shape.dim] == [2, 4, 4, 3]
    np.testing.assert_array_equal(tf.make_ndarray(tensor), IMAGES)

    files = [b"\x89PNG a", b"\xff\xd8 b"]
    request = client.grpc_request("adt", image_bytes=files)
    assert request.model_spec.signature_name == "serving_bytes"
    assert not request.model_spec.HasField("version")  # the server's latest
    tensor = request.inputs["image_bytes"]
    assert tensor.dtype == tf.string.as_datatype_enum and list(tensor.string_val) == files
    assert predict_pb2.PredictRequest.FromString(request.SerializeToString()) == request


# -- against stand-ins of TF Serving's two APIs, backed by a real export --------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    x, _ = make_tiny_images(4)
    path = export_classifier(tiny_classifier(), str(tmp_path_factory.mktemp("exp")), "tiny",
                             class_names=[f"c{i}" for i in range(10)], images=x,
                             verify_export=False)
    return tf.saved_model.load(path), x


@pytest.mark.slow
def test_rest_predict_against_a_stand_in(served):
    loaded, x = served
    server = rest_stand_in(loaded, "tiny")
    try:
        url = client.rest_url("tiny", port=server.server_address[1], version=1)
        expected = loaded.signatures["serving_default"](images=tf.constant(x))
        out = client.rest_predict(url, client.rest_body(images=x))
        np.testing.assert_allclose(out["probabilities"], expected["probabilities"].numpy(),
                                   atol=1e-6)
        np.testing.assert_array_equal(out["classes"], expected["classes"].numpy())
        out = client.rest_predict(url, client.rest_body(image_bytes=encode_png(x)))
        assert out["probabilities"].shape == (4, 10) and out["class_names"][0].startswith("c")
        with pytest.raises(RuntimeError, match=r"(?s)HTTP 400.*must lie in \[0, 1\]"):
            client.rest_predict(url, client.rest_body(images=x * 255))
    finally:
        server.shutdown()
        server.server_close()
    with pytest.raises(RuntimeError, match="Could not reach"):
        client.rest_predict(url, client.rest_body(images=x), timeout=5)


def test_grpc_predict_against_a_stand_in(served):
    loaded, x = served
    server, port = grpc_stand_in(loaded)
    try:
        target = f"localhost:{port}"
        out = client.grpc_predict(client.grpc_request("tiny", image_bytes=encode_png(x)), target)
        expected = loaded.signatures["serving_bytes"](image_bytes=tf.constant(encode_png(x)))
        np.testing.assert_allclose(out["probabilities"], expected["probabilities"].numpy(),
                                   atol=1e-6)
        assert out["classes"].dtype == np.int64 and out["class_names"].shape == (4,)
        with pytest.raises(RuntimeError, match=r"(?s)INVALID_ARGUMENT.*must be finite"):
            client.grpc_predict(client.grpc_request("tiny", images=x * np.nan), target)
    finally:
        server.stop(None)


@pytest.mark.parametrize("protocol", slow_cases(["rest", "grpc"], {"grpc"}))
def test_command_line_against_a_port_with_nothing_listening_exits_2(protocol, tmp_path):
    """No traceback: one line naming the server, exit 2 (also for an image that is not
    there)."""
    import socket

    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    image = tmp_path / "x.png"
    image.write_bytes(encode_png(IMAGES[:1])[0])
    for files, expected in (([str(image)], f"127.0.0.1:{port}" if protocol == "grpc" else
                             f"http://127.0.0.1:{port}/"), ([str(tmp_path / "no.png")],
                                                            "no.png")):
        proc = run_command("export.client", "--model_name=adt", f"--protocol={protocol}",
                           "--host=127.0.0.1", f"--rest_port={port}", f"--grpc_port={port}",
                           *files, timeout=120)
        assert proc.returncode == 2, proc.stderr[-1500:]
        assert "Traceback" not in proc.stderr and expected in proc.stderr
        assert "export.client: error:" in proc.stderr


def test_an_answer_that_is_not_json_names_the_url():
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"<html>a web server</html>")

    server = ThreadingHTTPServer(("localhost", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = client.rest_url("tiny", port=server.server_address[1])
        with pytest.raises(RuntimeError, match=f"{re.escape(url)} answered with something "
                                               "that is not JSON"):
            client.rest_predict(url, client.rest_body(images=IMAGES))
    finally:
        server.shutdown()
        server.server_close()


def test_the_command_line_against_a_model_that_is_not_our_export_exits_2(tmp_path):


    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):  # noqa: N802
            data = json.dumps({"predictions": [{"scores": [0.1, 0.9]}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("localhost", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    image = tmp_path / "x.png"
    image.write_bytes(encode_png(IMAGES[:1])[0])
    try:
        proc = run_command("export.client", "--model_name=other",
                           f"--rest_port={server.server_address[1]}", str(image), timeout=300)
    finally:
        server.shutdown()
        server.server_close()
    assert proc.returncode == 2, proc.stderr
    assert "answered without classes and probabilities" in proc.stderr
    assert "not an adt-export export" in proc.stderr
