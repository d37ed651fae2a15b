# Registers the stress-suite plugin (options, session fixtures, report) for this repository.
pytest_plugins = ["fixtures.plugin"]
