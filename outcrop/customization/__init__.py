"""Model customization: Bedrock's training data formats, hyperparameters, and the jobs that train on them."""
