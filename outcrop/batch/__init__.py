"""Batch inference: model invocation jobs that run a JSONL file of requests from S3 through the batch scheduler."""
