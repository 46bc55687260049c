"""The photo-z pipeline's training side: galaxies with spectroscopic redshifts in, a model out.

``galpipe photoz train`` and ``evaluate`` (:mod:`galpipe.photoz.cli`) run
:mod:`galpipe.photoz.workflow`: split by id, build the pixel vectors
(:mod:`galpipe.science.photoz_pixels`), fit the pixel kNN
(:mod:`galpipe.learning.pixel_redshift`), score the test split beside the integrated-flux
baseline, write the report and plots (:mod:`galpipe.photoz.plots`), and publish the model as an
artefact (:mod:`galpipe.pipelines.model_artefacts`). Galaxies come from the synthetic photo-z
sky or from a spectroscopic catalogue matched to the fetched cutouts
(:mod:`galpipe.photoz.datasets`). The worker that runs the model is
:mod:`galpipe.pipelines.photoz`.
"""
