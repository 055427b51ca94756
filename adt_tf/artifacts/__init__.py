"""What a finished run leaves and how the commands read it back: `loading` (a model argument:
a `.keras` file, a training workdir's last or best classifier, a SavedModel folder) and
`serving_contract` (the SavedModel's signatures, inputs, outputs and version folders, shared
by `adt-export`, its verification and the serving client; free of heavy imports). Imports
the training record (`adt_tf.training.record`) and the layers below it.

This `__init__` imports nothing, so that the serving client can read the contract without
loading Keras.
"""
