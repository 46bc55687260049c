"""The science core: the paper's Radon-transform measurement of galaxy orientation.

Pure functions over numpy arrays, vectorised over a batch of cutouts ``(N, B, S, S)``
(see ``/work/shared/SCIENCE.md`` for the method and the conventions):

- :mod:`galpipe.science.preprocess` -- step 2: sanitising, min-shift, circular mask.
- :mod:`galpipe.science.radon` -- step 3: the Radon transform as one cached linear operator.
- :mod:`galpipe.science.features` -- steps 4-5: pooling, sinusoid fit, errors, band combination.
- :mod:`galpipe.science.core` -- the whole measurement of a batch (:func:`measure_batch`).
"""
