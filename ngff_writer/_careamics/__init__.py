"""The CAREamics write strategy, below both of its faces (:mod:`ngff_writer.careamics` and
:mod:`ngff_writer.lightning`), so neither imports the other.
"""
