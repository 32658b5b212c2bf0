"""Data sets for raystudy.

:mod:`raystudy.data.synthetic` holds the embedded default data set: a seeded,
deterministic procedural generator of grayscale, holographic-looking ice-crystal
images for the 19 categories of the paper (Table 2) and the three campaigns
NASCENT19, NASCENT20 and CLOUDLAB (Table 1, Fig. 1), each with its own class mix
and imaging style (the domain shift between campaigns).
"""
