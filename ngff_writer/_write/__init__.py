"""Writing, top-down: allocate the arrays, check what a caller hands in, assemble whole
chunks, store them on the context's threads (the engine), reduce them into the levels
below (one pipeline per image), and finalize the image once complete.
"""
