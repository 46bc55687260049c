"""The Radon science core's steps 3-5 on a GPU (PyTorch).

Behind :func:`galpipe.science.core.measure_batch` through its ``sinogram_fitter``.
"""
