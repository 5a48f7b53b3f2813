"""Custom model import: Hugging Face folders from S3 made into imported models served on demand."""
