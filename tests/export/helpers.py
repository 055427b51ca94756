"""What the export tests share: the export name, Keras probabilities, hidden folders,
signature specs, the adt-export command, and in-process stand-ins of TF Serving's REST and
gRPC APIs backed by a real export (no TF Serving binary can be installed here)."""

import base64
import json
import os
import re
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple

import tensorflow as tf

from adt_tf.data import load as load_dataset

NAME = "tiny"


def keras_probabilities(classifier, images):
    return tf.nn.softmax(classifier(images, training=False)).numpy()


def hidden_dirs(model_dir):
    return [d for d in os.listdir(model_dir) if d.startswith(".")]


def specs(function):
    def spec(s):
        return (s.dtype, None if s.shape.rank is None else tuple(s.shape.as_list()))

    return ({k: spec(s) for k, s in function.structured_input_signature[1].items()},
            {k: spec(s) for k, s in function.structured_outputs.items()})


def cifar_uint8(n):
    """Real CIFAR-10 test images from the sample the package ships."""
    return load_dataset("cifar10_sample", max_test_examples=n).x_test


def run_record(workdir, **flags):
    """The record adt-train writes for a short ADT_EXP run on the bundled sample (20 training
    images held out for validation), resolved as adt-train resolves it; `flags` change it."""
    from adt_tf.training.config import RunConfig
    from adt_tf.training.resolve import resolve

    settings = dict(workdir=str(workdir), method="adt_exp", dataset="cifar10_sample",
                    epochs=1, method_params={"entropy_weight": 0.01},
                    max_train_examples=200, validation_examples=20, verbose=0)
    return resolve(RunConfig.from_flags(**dict(settings, **flags)))


def card_training_config(record) -> dict:
    """What a model card keeps of a run's record: its dict, with the number of held-out
    validation images instead of their indices."""
    data = json.loads(json.dumps(record.to_dict()))
    data["resolved"]["validation_examples"] = len(data["resolved"].pop("validation_indices"))
    return data


def make_workdir(tmp_path, classifier):
    """A training workdir as adt-train leaves it: classifier.keras, config.json (the run's
    record) and report.json. Returns (workdir, the card's training_config)."""
    from adt_tf.training.record import write_record

    workdir = tmp_path / "adt_run"
    workdir.mkdir()
    classifier.save(str(workdir / "classifier.keras"))
    record = run_record(workdir)
    report = {"dataset": "cifar10_sample", "epsilon": 8 / 255, "clean_accuracy": 0.25,
              "pgd20_accuracy": 0.125, "method": "adt_exp", "attack": "PGD-20"}
    write_record(record, str(workdir))
    (workdir / "report.json").write_text(json.dumps(report))
    return str(workdir), card_training_config(record)


def rest_stand_in(loaded, model_name: str):
    """Serves POST /v1/models/<model_name>[/versions/N]:predict as TF Serving's REST API
    documents it, from the loaded SavedModel's signatures, on a free localhost port
    (`server.server_address[1]`); `server.shutdown()` ends it."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def _reply(self, code, payload):
            data = json.dumps(payload).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self):  # noqa: N802
            if not re.fullmatch(rf"/v1/models/{model_name}(/versions/\d+)?:predict", self.path):
                return self._reply(404, {"error": f"no servable at {self.path}"})
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            rows = body["instances"]

            def value(v):
                return base64.b64decode(v["b64"]) if isinstance(v, dict) else v

            inputs = {k: tf.constant([value(r[k]) for r in rows]) for k in rows[0]}
            try:
                out = loaded.signatures[body.get("signature_name", "serving_default")](**inputs)
            except tf.errors.InvalidArgumentError as err:
                return self._reply(400, {"error": err.message})
            out = {k: [x.decode() if isinstance(x, bytes) else x for x in v.numpy().tolist()]
                   for k, v in out.items()}
            self._reply(200, {"predictions": [{k: v[i] for k, v in out.items()}
                                              for i in range(len(rows))]})

    server = ThreadingHTTPServer(("localhost", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def grpc_stand_in(loaded):
    """Serves TF Serving's gRPC PredictionService.Predict from the loaded SavedModel's
    signatures on a free localhost port; returns (server, port); `server.stop(None)` ends it."""
    import grpc
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    class Servicer(prediction_service_pb2_grpc.PredictionServiceServicer):
        def Predict(self, request, context):  # noqa: N802
            inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
            try:
                out = loaded.signatures[request.model_spec.signature_name](**inputs)
            except tf.errors.InvalidArgumentError as err:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, err.message)
            response = predict_pb2.PredictResponse(model_spec=request.model_spec)
            for k, v in out.items():
                response.outputs[k].CopyFrom(tf.make_tensor_proto(v.numpy()))
            return response

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(Servicer(), server)
    port = server.add_insecure_port("localhost:0")
    server.start()
    return server, port


class Serving(NamedTuple):
    rest_port: int
    grpc_port: int
    stop: object


def serve_export(version_dir: str) -> Serving:
    """Both stand-ins for the export at `version_dir` (<base>/<model_name>/<version>)."""
    loaded = tf.saved_model.load(version_dir)
    name = os.path.basename(os.path.dirname(os.path.normpath(version_dir)))
    rest = rest_stand_in(loaded, name)
    grpc_server, grpc_port = grpc_stand_in(loaded)

    def stop():
        rest.shutdown()
        rest.server_close()
        grpc_server.stop(None)

    return Serving(rest.server_address[1], grpc_port, stop)
