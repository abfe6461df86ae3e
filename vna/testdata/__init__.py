"""Deterministic test data for tests, the demo and benchmarks.

``vna.testdata.dicom`` builds DICOM instances (CT, MR, US multi-frame, compressed
variants, several character sets) and bad input; everything is seeded so two runs
produce the same bytes.
"""
