"""adt-tf: Adversarial Distributional Training in TensorFlow 2 / Keras 3."""

from setuptools import find_packages, setup

setup(
    name="adt-tf",
    version="0.1.0",
    description="Adversarial Distributional Training (NeurIPS 2020) and robust-training "
    "baselines for Keras 3 / TensorFlow 2, with an attack battery and SavedModel export.",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["adt_tf", "adt_tf.*", "trainers", "export"]),
    package_data={"adt_tf": ["data_files/*.npz"]},
    install_requires=[
        "tensorflow>=2.16",
        "tensorflow-probability>=0.24",
        "tf-keras>=2.16",  # TFP's Keras-dependent modules import it when Keras 3 is installed
        "tensorflow-datasets>=4.9",
        "importlib_resources",  # tensorflow-datasets imports it but does not declare it
        "tensorboard>=2.16",  # tf.summary for the TensorBoard callback
        "keras-tuner>=1.4",
        "absl-py>=1.0",
        "matplotlib",  # adt-tune's plot of robust accuracy and entropy against lambda
        # SavedModel export: PredictionLog warm-up records, ModelServerConfig, gRPC client.
        # Its version follows TensorFlow's (2.21 needs tensorflow 2.21).
        "tensorflow-serving-api>=2.16",
        "grpcio",
        "numpy",
        "matplotlib>=3.5",  # adt-analyze's pictures (Agg canvas, headless)
    ],
    extras_require={
        # scipy: the linear-programming reference of FAB-T's projection
        # (tests/adt_tf/attacks/test_fab.py);
        # adversarial-robustness-toolbox: the independent attacks of the cross-check
        # (tests/bench/test_crosscheck.py in the fast set, bench/crosscheck.py); pytest-xdist: the
        # fast set runs on two processes (-n 2 --dist loadfile, the README's command);
        # pytest-randomly: every run takes the tests in a random order, its seed printed in
        # the header (-p no:randomly for the file order, --randomly-seed=N to replay one).
        # import-linter: the package's layers (.importlinter, tests/test_layers.py).
        "test": ["pytest>=7", "pytest-xdist>=3", "pytest-randomly>=3.15", "scipy",
                 "adversarial-robustness-toolbox>=1.17", "import-linter>=2"],
        "dev": ["pytest>=7", "pytest-xdist>=3", "pytest-randomly>=3.15", "scipy",
                "adversarial-robustness-toolbox>=1.17", "import-linter>=2", "ruff"],
        "reference": ["adversarial-robustness-toolbox>=1.17"],
    },
    entry_points={
        "console_scripts": [
            "adt-train=trainers.train:run",
            "adt-tune=trainers.tune_lambda:run",
            "adt-evaluate=trainers.evaluate:run",
            "adt-export=export.export_saved_model:run",
            "adt-analyze=trainers.analyze:run",
        ],
    },
)
