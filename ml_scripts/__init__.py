"""Job scripts the mlqueue worker runs: each module exposes ``run(job, report) -> outcome``."""
