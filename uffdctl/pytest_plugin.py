"""pytest plugin (entry point ``uffdctl``): filled in by the CI-formats work (issue 5)."""
