"""`export.warmup`: the warm-up records."""


import numpy as np
import tensorflow as tf

from export import warmup
from tests.export.helpers import NAME


def test_warmup_records_parse_and_run_against_the_model(exported):
    _, path, loaded = exported
    records = warmup.read_warmup(path)
    assert len(records) == 4
    used = set()
    for record in records:
        request = record.predict_log.request
        assert record.WhichOneof("log_type") == "predict_log"
        assert request.model_spec.name == NAME
        signature = request.model_spec.signature_name
        inputs = {k: tf.constant(tf.make_ndarray(v)) for k, v in request.inputs.items()}
        out = loaded.signatures[signature](**inputs)
        batch = next(iter(inputs.values())).shape[0]
        assert out["probabilities"].shape == (batch, 10)
        np.testing.assert_allclose(out["probabilities"].numpy().sum(axis=-1), 1.0, atol=1e-5)
        used.add(signature)
    assert used == {"serving_default", "serving_bytes", "predict"}
