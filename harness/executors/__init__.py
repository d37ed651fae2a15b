"""Where trainings and measurements run: here (the default: lazily, in this process, or in
pytest-xdist workers sharing the caches), or on a Ray cluster (``ray_executor``). A training or
a measurement is a pure function of its key returning bytes; wherever it runs, the driver
writes what comes back into its own caches."""
