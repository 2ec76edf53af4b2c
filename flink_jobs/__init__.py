"""The PyFlink jobs. Light on purpose: the tooling (`imgstream job ...`) imports the job's name
from here without loading PyFlink."""

JOB_NAME = "imgstream-classify"  # flink_jobs/classify.py's default job name (its first argument overrides it)
