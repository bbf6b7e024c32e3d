"""Helpers shared by the test files (imported as ``helpers.<module>``; the tests folder is on sys.path)."""
