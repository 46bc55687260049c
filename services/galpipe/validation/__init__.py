"""Validation of the position angles: truth, the paper's protocol, a peer, the floor, Gaia.

``galpipe validate OUT`` (:func:`galpipe.validation.run.run_validation`) writes a report
directory -- ``report.md``, PNG figures, ``summary.json`` and per-galaxy tables -- that can
stand as a paper's appendix. One module per job:

- :mod:`~galpipe.validation.population` -- the truth population: GalSim galaxies from the
  synthetic sky over documented distributions, served as cutout FITS and decoded by the radon
  pipeline's own decoder.
- :mod:`~galpipe.validation.peer` -- the peer: SExtractor's second-moment orientation (``sep``).
- :mod:`~galpipe.validation.stats` -- axial error statistics, bins and uncertainty calibration.
- :mod:`~galpipe.validation.truth` -- accuracy against the truth, per band and combined.
- :mod:`~galpipe.validation.reliability` -- thresholds of the unreliable-angle rule, chosen on
  truth by purity and completeness.
- :mod:`~galpipe.validation.protocol` -- the paper's R/B/N augmentation protocol (section 5).
- :mod:`~galpipe.validation.gaia` -- agreement with Gaia DR3's Sérsic position angles.
- :mod:`~galpipe.validation.parallel` -- chunked work over a process pool, deterministic.
- :mod:`~galpipe.validation.oracle` -- the information floor: an oracle that knows all but
  the angle, on the protocol's images.
- :mod:`~galpipe.validation.lensing` -- fit for weak lensing: no preferred direction, and the
  shear from position angles alone (multiplicative and additive bias, ours and the peer).
- :mod:`~galpipe.validation.summary` -- the run's findings as frozen dataclasses
  (``summary.json``).
- :mod:`~galpipe.validation.report` -- Markdown, figures and ``summary.json``.
- :mod:`~galpipe.validation.run` -- the whole run; :mod:`~galpipe.validation.cli` -- the command.
"""
