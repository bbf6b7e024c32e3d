"""Helpers shared by the test files (imported as ``helpers.<module>``; the tests folder is on sys.path)."""

# The only time limit in the suite: a guard against a hung child process, never a speed requirement.
# Half an hour is far beyond any test's run time on a loaded 2-core machine, so a slow machine never
# fails a test; a hang still ends (CI gives the whole suite 90 minutes).
HANG_S = 1800
