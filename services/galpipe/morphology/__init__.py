"""The morphology pipeline's training side: labelled data in, a registered ONNX model out.

``galpipe morphology train`` and ``evaluate`` (:mod:`galpipe.morphology.cli`) run
:mod:`galpipe.morphology.workflow`: split by id, train (:mod:`galpipe.learning.training`, which
needs the ``train`` extra: PyTorch), export to ONNX and check it against PyTorch, score the
test split through ONNX Runtime, write the report and plots, and publish the model as an
artefact (:mod:`galpipe.pipelines.model_artefacts`). The worker that runs the model is
:mod:`galpipe.pipelines.morphology`.
"""
