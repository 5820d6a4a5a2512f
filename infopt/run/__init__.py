"""Running notebooks: the command line, the plan, the manifest and lock, presets, executors."""
