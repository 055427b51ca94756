"""adt-export: export a trained classifier as a SavedModel that TensorFlow Serving loads as is.

    adt-export --model=runs/adt_exp --export_dir=exports --model_name=adt_cifar10

`--model` is a training workdir (its config.json names the dataset, so the export gets the
class names and the model card gets the dataset, epsilon, method, accuracies of report.json
and the training config) or a bare `.keras` classifier (add `--dataset` for class names).
Writes `<export_dir>/<model_name>/<version>/` atomically (version: the next free integer
unless `--version`), with warm-up requests and `model_card.json`, updates
`<export_dir>/models.config`, and verifies the export in a fresh process before publishing it.
"""

from __future__ import annotations

import json
import os
import re

from absl import flags, logging

from trainers import cli

COMMAND = "adt-export"
FLAGS = flags.FLAGS

flags.DEFINE_string("model", None, "A .keras classifier or a training workdir (holding "
                    "classifier.keras, config.json and report.json).")
flags.DEFINE_string("export_dir", "exports", "Export base: one folder per model, numbered "
                    "version folders inside, models.config beside them.")
flags.DEFINE_string("model_name", None, "Name of the served model (default: the workdir's or "
                    "the file's name).")
cli.define_flag("version", None, "Version number (default: the next free integer). An "
                "existing version is never overwritten.", int | None)
flags.DEFINE_string("dataset", None, "Dataset of the classifier, for class names and real "
                    "warm-up images (default: the workdir's config.json).")
flags.DEFINE_string("serving_root", "/models", "Where the server sees --export_dir: base_path "
                    "in models.config is <serving_root>/<model_name> (/models in the official "
                    "Docker container; an absolute local path for a local server).")
flags.DEFINE_enum("checkpoint", None, ["last", "best"], "A training workdir's classifier to "
                  "export: last (classifier.keras) or best (best.keras, the epoch of the "
                  "highest validation robust accuracy); default best when the run held out a "
                  "validation split, else last. The choice is printed and in the model card.")
cli.define_flag("verify", True, "Reload the export in a fresh process and compare it with "
                  "the Keras classifier before publishing it.")


def default_model_name(model_path: str) -> str:
    path = os.path.normpath(model_path)
    base = os.path.basename(path) if os.path.isdir(path) else os.path.splitext(
        os.path.basename(path))[0]
    if base == "classifier":  # <workdir>/classifier.keras -> the workdir's name
        base = os.path.basename(os.path.dirname(os.path.abspath(path)))
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", base).lstrip(".-")
    return name or "classifier"


def export_from_flags() -> tuple[str, dict]:
    from export import exporter, sources

    source = sources.load_source(FLAGS.model, FLAGS.checkpoint)
    if source.workdir:
        print(f"Exporting {source.model_path} (--checkpoint="
              f"{'best' if source.model_path.endswith('best.keras') else 'last'}).")
    from export.signatures import spec_of

    dataset = FLAGS.dataset or source.dataset
    data_dir = source.data_dir
    shape = spec_of(source.classifier).input_shape  # a classifier it can serve, or why not
    if FLAGS.dataset:
        sources.check_dataset_fits(FLAGS.dataset, shape, source.classifier)
    images, images_source = sources.real_images(shape, exporter.NUM_IMAGES, dataset, data_dir)
    card = sources.workdir_card(source)
    if FLAGS.dataset:
        card["dataset"] = FLAGS.dataset
    path = exporter.export_classifier(
        source.classifier, FLAGS.export_dir, FLAGS.model_name or default_model_name(
            FLAGS.model), FLAGS.version, class_names=sources.class_names_of(dataset),
        model_card=card, images=images, images_source=images_source,
        verify_export=FLAGS.verify, serving_root=FLAGS.serving_root)
    with open(os.path.join(path, "model_card.json")) as f:
        return path, json.load(f)


def main(argv):
    if not FLAGS["verbosity"].present:  # TensorFlow's INFO lines drown the report
        logging.set_verbosity(logging.WARNING)
    try:
        cli.unexpected_arguments(argv)
        # Checked before TensorFlow is imported, so a typo costs no start-up time.
        if not FLAGS.model:
            raise ValueError("--model is required: a .keras classifier or a training workdir.")
        if not os.path.exists(FLAGS.model):
            raise ValueError(f"{FLAGS.model} does not exist; --model must be a .keras "
                             "classifier or a training workdir holding classifier.keras.")
        from export.serving_config import check_serving_root

        check_serving_root(FLAGS.serving_root)
    except ValueError as err:
        cli.fail(COMMAND, err)
    cli.import_tensorflow()
    from adt_tf.core.interrupts import interruptible
    from export.verify import VerificationError

    try:
        with interruptible(COMMAND, "Nothing was published (a version folder appears "
                           "whole or not at all): rerun the command."):
            path, card = export_from_flags()
    except (ValueError, OSError, VerificationError) as err:  # OSError: disk full, ...
        cli.fail(COMMAND, err)  # on a VerificationError, no version folder was published

    print(f"Exported {card['model_name']} version {card['version']} to {path}")
    check = card.get("verification")
    if check:
        print(f"  verified in a fresh process: serving_default vs Keras max abs difference "
              f"{check['max_abs_diff']:.3g} (tolerance {check['tolerance']:g}); "
              f"serving_bytes vs serving_default {check['bytes_max_abs_diff']:.3g}; "
              "saved_model_cli show --all ok")
    else:
        print("  not verified (--noverify)")
    print(f"  signatures: {', '.join(k for k in card['signatures'] if k != 'outputs')}")
    print(f"  models.config: {os.path.join(FLAGS.export_dir, 'models.config')}")


def run():
    """Console-script entry point (`adt-export`)."""
    cli.run(COMMAND, main, __doc__, [f.name for f in FLAGS.get_flags_for_module(__name__)])


if __name__ == "__main__":
    run()
