"""PDF letters and cut-out cards: runs of the ``pdf`` kind (``pipeline``), their
routes (``views``); ``worker`` is all a rendering process imports."""
