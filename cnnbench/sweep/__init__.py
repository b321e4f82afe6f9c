"""Sweeps (`cnnbench -m`): the jobs that skip, resume or train their run folder (jobs), the claim
that keeps one process per run folder (claims), what a sweep's jobs did (journal), and reading run
folders back (folders)."""
