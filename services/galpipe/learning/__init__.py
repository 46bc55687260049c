"""Morphology networks: Galaxy Zoo 2 vote fractions learnt from cutouts.

A layer of its own just above the science core: it imports :mod:`galpipe.science` (the GZ2
tree, its metric) and :mod:`galpipe.errors` only. torch is imported only by the modules that
train or export a network, so a process that only predicts needs onnxruntime and numpy:

- :mod:`galpipe.learning.tree` -- (torch) the GZ2 tree normalisation, twin of
  :func:`galpipe.science.gz2.fractions_from_logits`;
- :mod:`galpipe.learning.networks` -- (torch) EfficientNet-B0, ResNet-18 and a small CNN with
  the GZ2 tail, :func:`~galpipe.learning.networks.build_network`,
  :func:`~galpipe.learning.networks.load_pretrained`;
- :mod:`galpipe.learning.training` -- (torch) the paper's training schedule, augmentations,
  checkpoints (:func:`~galpipe.learning.training.train`);
- :mod:`galpipe.learning.onnx_export` -- (torch) a trained network to ONNX bytes;
- :mod:`galpipe.learning.inference` -- (onnxruntime, no torch) batched prediction from ONNX
  bytes (:class:`~galpipe.learning.inference.MorphologyModel`);
- :mod:`galpipe.learning.metrics` -- (numpy, no torch) RMSE, per-answer RMSE and the six-class
  confusion matrix of any predictor (:func:`~galpipe.learning.metrics.evaluate`).

Images are float32 ``(N, C, S, S)`` network inputs (:mod:`galpipe.science.morphology_input`
makes them from cutouts); fractions are float64 ``(N, 37)`` in the order of
:data:`galpipe.science.gz2.ANSWER_COLUMNS`.
"""
