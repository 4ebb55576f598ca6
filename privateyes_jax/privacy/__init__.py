"""Differential privacy for the secure aggregate: integer noise and its accounting.

``discrete_gaussian`` samples the noise that servers add inside the integer ring (a
float Gaussian cannot be added to shares of Z_2^k without rounding it, which would change
its distribution and void the Gaussian mechanism's analysis); ``accounting`` turns a noise
multiplier, a client sampling rate and a number of rounds into client-level (ε, δ); ``dp``
is the mechanism a run uses (sampling, clipping, the noise's scale, ε per round).
"""
