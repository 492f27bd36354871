"""Images: one model (:mod:`.model`), its readers and writers, pushes and SBOMs.

Every reader returns an :class:`~scratchpack.image.model.Image`; every writer
takes one. Media types and platforms are declared once, in :mod:`.media`.
"""
