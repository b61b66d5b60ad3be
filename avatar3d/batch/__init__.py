"""Batches: many enrollments and many clips as one command, on Ray (docs/batch.md).

Each job is the single command's own code (`avatar3d enroll ...`, `avatar3d render ...`), parsed and checked up
front, run as one Ray task with declared resources, skipped when its output is already current, and summed up in a
table and a JSON file. Reading the manifest (`manifest.py`) → whether an output is current (`current.py`) → jobs
and their checks (`jobs.py`) → one job in a worker (`task.py`) → the run on Ray and its progress (`runner.py`) → the
summary (`summary.py`) → the verbs (`command.py`).
"""
