"""What a run trains on, shared by both engines and the control plane.

``dataset`` reads prompt datasets (JSONL, Parquet, CSV in verl's format) into
PromptRecords; ``arithmetic`` generates the built-in verifiable problem sets (the run
config's ``task``: add, mul, add_aligned) and exports them as verl Parquet; ``verifiers``
scores a response against a ground truth. Nothing here imports Django, an engine or the
control plane.
"""
