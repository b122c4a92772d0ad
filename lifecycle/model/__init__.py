"""The model: base encoder, adapter host, packed and padded passes, calibration, out-of-scope
detector, the adapter artifact's files.
"""
