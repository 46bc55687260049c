"""The science core: the paper's Radon-transform measurement of galaxy orientation.

Pure functions over numpy arrays, vectorised over a batch of cutouts ``(N, B, S, S)``; they
import nothing else of galpipe. ``docs/science.md`` states the method step by step, with the
paper's section numbers, and the conventions:

- :mod:`galpipe.science.preprocess` -- step 2: sanitising, min-shift, circular mask.
- :mod:`galpipe.science.sky` -- (ours) sky level and noise of every band from the corners.
- :mod:`galpipe.science.neighbours` -- (ours) neighbour masking.
- :mod:`galpipe.science.radon` -- step 3: the Radon transform as one cached linear operator.
- :mod:`galpipe.science.features` -- steps 4-5: pooling, sinusoid fit, errors, band combination.
- :mod:`galpipe.science.core` -- the whole measurement of a batch (:func:`measure_batch`).
- :mod:`galpipe.science.orientation` -- step 6: image angle <-> position angle from the WCS.
- :mod:`galpipe.science.reliability` -- (ours) whether a combined angle is unreliable.
- :mod:`galpipe.science.gz2` -- (morphology) the Galaxy Zoo 2 decision tree, its
  normalisation, six-class labels and RMSE (``docs/morphology.md``).
"""
