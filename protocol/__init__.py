"""Wire formats of the cabinet gateway: pure codecs, no I/O. Imports nothing else of ours."""
