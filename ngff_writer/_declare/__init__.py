"""Declaring: what a user declares (an image's spec, its pyramid levels, its block grid),
checked once and frozen, and where ngff-writer keeps its own objects. Pure: no store I/O.
"""
