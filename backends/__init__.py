"""Engine adapters: Celery and RQ behind one small interface, and the job store."""
