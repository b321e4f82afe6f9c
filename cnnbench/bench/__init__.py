"""`cnnbench-bench`: an epoch against the textbook loop and the compute limit (epoch), whole
processes (process), an image folder through its cache (folder); the textbook's own loop (textbook)."""
